//! Rendering of `ps`: a JSON array, a table, and the lineage tree.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{self, Write},
};

use bpfkill_common::Tag;

use super::{snapshot::in_parallel, PsEntry};
use crate::lineage::escape::Reason;
use crate::{lineage::tree::Creators, text::Escaped, tracking::Tracking};

/// Writes the entries as a JSON array, indented when `pretty` (large listings are
/// serialised on every CPU).
pub fn write_json(entries: &[PsEntry], pretty: bool, out: &mut impl Write) -> io::Result<()> {
    if pretty {
        serde_json::to_writer_pretty(&mut *out, entries)?;
        return writeln!(out);
    }
    // Each part is the comma-separated objects of a slice; the parts are joined by commas.
    let parts: Vec<Vec<u8>> = in_parallel(entries, 1024, |part| {
        let mut buf = Vec::with_capacity(part.len() * 512);
        for (i, e) in part.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            // Serialising plain data into memory cannot fail.
            let _ = serde_json::to_writer(&mut buf, e);
        }
        vec![buf]
    });
    out.write_all(b"[")?;
    for (i, p) in parts.iter().filter(|p| !p.is_empty()).enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(p)?;
    }
    out.write_all(b"]\n")
}

fn reason_list(e: &PsEntry, name: fn(Reason) -> &'static str) -> String {
    e.escape_reasons
        .iter()
        .map(|&r| name(r))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every reason, for the legend of the abbreviated column.
const REASONS: [Reason; 7] = [
    Reason::Reparented,
    Reason::LeftCgroup,
    Reason::NewSession,
    Reason::NewPgrp,
    Reason::NewPidns,
    Reason::Renamed,
    Reason::Exec,
];

/// Writes the entries as a table. The ESCAPED column abbreviates the reasons (a legend
/// follows) unless `wide`.
pub fn write_table(entries: &[PsEntry], wide: bool, out: &mut impl Write) -> io::Result<()> {
    let (reason_name, width): (fn(Reason) -> &'static str, usize) = if wide {
        (Reason::name, 56)
    } else {
        (Reason::abbrev, 21)
    };
    writeln!(
        out,
        "{:>7} {:>7} {:>8} {:<16} {:<5} {:<1} {:<16} {:<width$} CMDLINE",
        "PID", "PPID", "CREATOR", "SERVICE", "UID", "S", "COMM", "ESCAPED"
    )?;
    for e in entries {
        let creator = match (e.creator_pid, e.creator_alive) {
            (Some(c), Some(false)) => format!("{c}†"),
            (Some(c), _) => c.to_string(),
            (None, _) if matches!(e.lineage, "unknown" | "adopted") => "?".into(),
            (None, _) => "-".into(),
        };
        let escaped = if e.escaped {
            reason_list(e, reason_name)
        } else {
            "no".into()
        };
        writeln!(
            out,
            "{:>7} {:>7} {:>8} {:<16} {:<5} {:<1} {:<16} {:<width$} {}",
            e.pid,
            e.ppid,
            creator,
            Escaped(&e.service),
            e.uid.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
            e.state,
            Escaped(&e.comm),
            escaped,
            Escaped(if e.cmdline.is_empty() {
                e.exe.as_deref().unwrap_or("-")
            } else {
                &e.cmdline
            })
        )?;
    }
    if entries.iter().any(|e| e.creator_alive == Some(false)) {
        writeln!(out, "(† the creator has exited)")?;
    }
    if !wide && entries.iter().any(|e| e.escaped) {
        let legend: Vec<String> = REASONS
            .iter()
            .map(|r| format!("{}={}", r.abbrev(), r.name()))
            .collect();
        writeln!(out, "(escapes: {}; --wide spells them out)", legend.join(" "))?;
    }
    Ok(())
}

/// The lineage tree: each process under the process that forked it.
struct Lineage<'a> {
    live: HashMap<u32, &'a PsEntry>,
    children: BTreeMap<u32, Vec<u32>>,
    colour: bool,
}

impl Lineage<'_> {
    fn label(&self, pid: u32) -> String {
        let Some(e) = self.live.get(&pid) else {
            return self.paint("2", &format!("[exited] {pid}"));
        };
        let mut s = format!("{} {}", Escaped(&e.comm), e.pid);
        if e.lineage != "forked" {
            s.push_str(&format!(" [{}]", e.lineage));
        }
        if e.creator_pid.is_some_and(|c| c != e.ppid) {
            s.push_str(&format!(" (ppid {})", e.ppid));
        }
        if e.escaped {
            s.push_str(&self.paint("1;31", &format!(" ESCAPED: {}", reason_list(e, Reason::name))));
        }
        s
    }

    fn paint(&self, sgr: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn draw(&self, out: &mut impl Write, pid: u32, prefix: &str, last: bool) -> io::Result<()> {
        let branch = if last { "└─ " } else { "├─ " };
        writeln!(out, "{prefix}{branch}{}", self.label(pid))?;
        let kids = self.children.get(&pid).map(Vec::as_slice).unwrap_or(&[]);
        let next = format!("{prefix}{}", if last { "   " } else { "│  " });
        for (i, &k) in kids.iter().enumerate() {
            self.draw(out, k, &next, i + 1 == kids.len())?;
        }
        Ok(())
    }

    fn service_of(&self, pid: u32) -> Option<&str> {
        if let Some(e) = self.live.get(&pid) {
            return Some(&e.service);
        }
        self.children.get(&pid)?.iter().find_map(|&k| self.service_of(k))
    }
}

/// Writes the lineage tree, from the recorded creators rather than ppid: a double-forked
/// grandchild appears under its creator even though init adopted it. Exited creators still
/// in the ghost map appear as `[exited]` nodes; escaped processes are marked (in colour
/// only when `colour` is set).
pub fn write_tree(
    tracking: &Tracking,
    entries: &[PsEntry],
    colour: bool,
    out: &mut impl Write,
) -> io::Result<()> {
    let live: HashMap<u32, &PsEntry> = entries.iter().map(|e| (e.pid, e)).collect();
    let live_tags: HashMap<u32, Tag> = entries.iter().map(|e| (e.pid, e.tag)).collect();
    let creators = Creators::new(tracking, &live_tags);
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut exited: HashSet<u32> = HashSet::new();
    let mut roots: Vec<u32> = Vec::new();
    for e in entries {
        let Some(first_creator) = e.creator_pid else {
            roots.push(e.pid);
            continue;
        };
        let (mut child, mut creator) = (e.pid, (first_creator, e.tag.creator_start_ns));
        loop {
            parent.insert(child, creator.0);
            if creators.is_live(creator) || !exited.insert(creator.0) {
                break;
            }
            // The creator has exited: climb through the ghosts while they remember.
            match creators.creator_of(creator) {
                Some(next) => {
                    child = creator.0;
                    creator = next;
                }
                None => {
                    roots.push(creator.0);
                    break;
                }
            }
        }
    }
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (&child, &par) in &parent {
        children.entry(par).or_default().push(child);
    }
    for v in children.values_mut() {
        v.sort_unstable();
    }
    roots.sort_unstable();
    roots.dedup();
    let tree = Lineage {
        live,
        children,
        colour,
    };
    let mut by_service: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in roots {
        let svc = tree.service_of(r).unwrap_or("?").to_string();
        by_service.entry(svc).or_default().push(r);
    }
    for (svc, rs) in by_service {
        writeln!(out, "{svc}")?;
        for (i, r) in rs.iter().enumerate() {
            tree.draw(out, *r, "", i + 1 == rs.len())?;
        }
    }
    Ok(())
}
