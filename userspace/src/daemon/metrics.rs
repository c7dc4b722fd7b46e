//! `bpfkill daemon --metrics ADDR`: Prometheus text exposition over HTTP (`GET /metrics`),
//! encoded by prometheus-client. Each scrape reads the pinned maps afresh (on the runtime's
//! blocking pool, so a slow scrape never delays the event loop): per-service live and
//! escaped processes and kernel kills, events lost, map fill, and the daemon's own journal
//! counters.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    error::{Error, Result},
    forensics::{
        journal,
        ps::{self, Query},
    },
    lineage::registry,
    tracking::{PinPaths, Tracking},
};

/// The metrics address: a bare port means loopback (`9091` → `127.0.0.1:9091`); anything
/// else is an address with its port (`0.0.0.0:9091`, `[::1]:9091`).
pub fn parse_addr(text: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("{text:?} is neither a port nor an address with a port (9091, 0.0.0.0:9091, [::1]:9091)")
    })
}

/// What the daemon counts of itself, shared with the scrapes.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    events: AtomicU64,
    journal_dropped: AtomicU64,
    journal_degraded: AtomicU64,
}

impl DaemonCounters {
    /// One kernel event handled.
    pub fn event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// The journal's state after a batch.
    pub fn journal(&self, w: &journal::Writer) {
        self.journal_dropped.store(w.dropped(), Ordering::Relaxed);
        self.journal_degraded
            .store(u64::from(w.degraded().is_some()), Ordering::Relaxed);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: String,
}

/// Binds `addr` and serves scrapes from a task of the current runtime; returns the bound
/// address (the port when 0 was asked for).
pub async fn serve(addr: SocketAddr, paths: PinPaths, counters: Arc<DaemonCounters>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listen for metrics on {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("metrics address", e))?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics: accept: {e}");
                    continue;
                }
            };
            let paths = paths.clone();
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(req, paths.clone(), Arc::clone(&counters)));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("metrics: connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

async fn respond(
    req: Request<Incoming>,
    paths: PinPaths,
    counters: Arc<DaemonCounters>,
) -> std::result::Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, kind: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
        Ok(r)
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "see /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        );
    }
    match tokio::task::spawn_blocking(move || render(&paths, &counters)).await {
        Ok(Ok(text)) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Ok(Err(e)) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{e}\n")),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
    }
}

/// One scrape: the registry filled from the pinned maps and the daemon's counters, encoded.
fn render(paths: &PinPaths, counters: &DaemonCounters) -> Result<String> {
    let tracking = Tracking::open(paths)?;
    let mut reg = Registry::with_prefix("bpfkill");

    let processes = Family::<ServiceLabel, Gauge>::default();
    let escaped = Family::<ServiceLabel, Gauge>::default();
    let kernel_kills = Family::<ServiceLabel, Counter>::default();
    let untagged = Family::<ServiceLabel, Counter>::default();
    let services = registry::list(&tracking);
    let mut live: HashMap<u32, i64> = HashMap::new();
    let tags = tracking.tags();
    for (_, tag) in &tags {
        *live.entry(tag.service_id).or_default() += 1;
    }
    // Escapes as `ps` sees them (its reasons, its snapshot source).
    let listing = ps::list(&tracking, paths, &Query::default()).unwrap_or_default();
    let mut escapes: HashMap<&str, i64> = HashMap::new();
    for e in listing.iter().filter(|e| e.escaped) {
        *escapes.entry(&e.service).or_default() += 1;
    }
    for svc in &services {
        let label = ServiceLabel {
            service: svc.name.clone(),
        };
        processes
            .get_or_create(&label)
            .set(live.get(&svc.id).copied().unwrap_or(0));
        escaped
            .get_or_create(&label)
            .set(escapes.get(svc.name.as_str()).copied().unwrap_or(0));
        let stats = tracking.service_stats(svc.id);
        kernel_kills.get_or_create(&label).inc_by(stats.kernel_kills);
        untagged.get_or_create(&label).inc_by(stats.untagged);
    }
    reg.register(
        "service_processes",
        "Live tracked processes of a service",
        processes,
    );
    reg.register(
        "service_escaped_processes",
        "Live processes of a service with an escape reason (see bpfkill ps)",
        escaped,
    );
    reg.register(
        "service_kernel_kills",
        "Processes of a service killed in the kernel by doom mode since it was registered",
        kernel_kills,
    );
    reg.register(
        "service_untagged",
        "Children of a service's processes the kernel could not tag (tag map full)",
        untagged,
    );

    let stats = tracking.stats();
    for (name, help, value) in [
        (
            "events_lost",
            "Kernel events dropped because the ring buffer was full",
            stats[bpfkill_common::stat::EVENTS_LOST as usize],
        ),
        (
            "journal_events",
            "Kernel events this daemon handled (journaled unless the journal is degraded)",
            counters.events.load(Ordering::Relaxed),
        ),
        (
            "journal_dropped",
            "Journal records not written (the journal could not be written)",
            counters.journal_dropped.load(Ordering::Relaxed),
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        reg.register(name, help, c);
    }
    let degraded = Gauge::<i64>::default();
    degraded.set(counters.journal_degraded.load(Ordering::Relaxed) as i64);
    reg.register(
        "journal_degraded",
        "1 while the journal cannot be written",
        degraded,
    );

    let fill = Family::<MapLabel, Gauge<f64, AtomicU64>>::default();
    let rules = tracking.rules();
    let ratio = |used: usize, cap: u32| used as f64 / f64::from(cap.max(1));
    for (map, value) in [
        ("tags", ratio(tags.len(), tracking.max_tags())),
        ("registry", ratio(services.len(), bpfkill_common::MAX_SERVICES)),
        ("exe_rules", ratio(rules.exe.len(), bpfkill_common::MAX_RULES)),
        ("comm_rules", ratio(rules.comm.len(), bpfkill_common::MAX_RULES)),
        ("leave_rules", ratio(rules.leave.len(), bpfkill_common::MAX_RULES)),
    ] {
        fill.get_or_create(&MapLabel { map: map.into() }).set(value);
    }
    reg.register("map_fill_ratio", "Fill of each pinned map (0 to 1)", fill);

    let mut text = String::new();
    encode(&mut text, &reg).map_err(|e| Error::io("encode metrics", std::io::Error::other(e)))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_is_loopback() {
        assert_eq!(parse_addr("9091").unwrap(), "127.0.0.1:9091".parse().unwrap());
        assert_eq!(parse_addr("0.0.0.0:80").unwrap(), "0.0.0.0:80".parse().unwrap());
        assert_eq!(parse_addr("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert!(parse_addr("localhost").is_err());
        assert!(parse_addr("99999").is_err());
    }
}
