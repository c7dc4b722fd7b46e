//! Candidate collection: which processes belong to a service, each with the evidence that
//! says so. Processes with no evidence are never candidates.

use std::collections::BTreeMap;

use bpfkill_common::Tag;
use serde::Serialize;

use crate::{service::Service, tracking::Tracking};

/// Why a process is believed to belong to the service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Tagged in the kernel (forked by a tracked process, or registered by run/track).
    pub tag: bool,
}

impl Evidence {
    /// The evidence as a list of names, for reports.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.tag {
            v.push("tag");
        }
        v
    }
}

/// A process that may be signalled.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its tgid.
    pub pid: u32,
    /// Its tag, when tagged.
    pub tag: Option<Tag>,
    /// The evidence.
    pub evidence: Evidence,
}

impl Candidate {
    /// The start time (ns since boot) the candidate is expected to have.
    pub fn expected_start_ns(&self) -> Option<u64> {
        self.tag.map(|t| t.start_ns)
    }
}

/// Collects the candidates of `service`: today, every live tag of the service.
pub fn collect(tracking: &Tracking, service: &Service) -> Vec<Candidate> {
    let mut by_pid: BTreeMap<u32, Candidate> = BTreeMap::new();
    for (pid, tag) in tracking.service_tags(service.id) {
        by_pid.insert(
            pid,
            Candidate {
                pid,
                tag: Some(tag),
                evidence: Evidence { tag: true },
            },
        );
    }
    by_pid.into_values().collect()
}
