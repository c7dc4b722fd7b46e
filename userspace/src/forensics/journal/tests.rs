//! Tests of the journal: format, rotation, torn tails, following, filters.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{files::active_path, *};
use crate::{
    sys::signal::Signal,
    tracking::events::{Kind, TrackedEvent},
};

/// A unique temporary directory, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "bpfkill-journal-test-{}-{}-{}",
            std::process::id(),
            name,
            n
        ));
        let _ = fs::remove_dir_all(&dir);
        TestDir(dir)
    }

    fn cfg(&self, max_bytes: u64, keep: usize) -> JournalConfig {
        JournalConfig {
            dir: self.0.clone(),
            max_bytes,
            keep,
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs) + Duration::from_micros(123_456)
}

fn fork(pid: u32) -> Record {
    Record {
        service: "crond".into(),
        service_id: 7,
        pid,
        ppid: 100,
        creator_pid: Some(100),
        comm: "sh".into(),
        ..Record::new("fork", at(u64::from(pid)))
    }
}

fn pids(records: &[Record]) -> Vec<u32> {
    records.iter().map(|r| r.pid).collect()
}

fn journal_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(ACTIVE_FILE))
        .collect();
    names.sort();
    names
}

#[test]
fn round_trip() {
    let t = TestDir::new("roundtrip");
    let mut exec = Record {
        exe: Some("/bin/sleep".into()),
        argv: Some(vec!["sleep".into(), "100".into()]),
        ..fork(2)
    };
    exec.event = "exec".into();
    let written = vec![fork(1), exec, Record::lost(17, at(3))];
    {
        let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
        for r in &written {
            w.append(r).unwrap();
        }
        w.flush().unwrap();
    }
    let out = read_all(&t.0).unwrap();
    assert_eq!(out.records, written);
    assert!(out.skipped.is_empty());
    let mode = fs::metadata(&t.0).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn json_format_is_stable() {
    let line = String::from_utf8(fork(1).to_json_line().unwrap()).unwrap();
    assert!(line.ends_with("}\n"));
    let keys = [
        "time",
        "time_ns",
        "event",
        "service",
        "service_id",
        "pid",
        "ppid",
        "creator_pid",
        "comm",
        "exe",
        "argv",
        "exit_code",
        "signal",
        "from_service",
        "error",
        "lost",
    ];
    let mut last = 0;
    for key in keys {
        let at = line
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(at >= last, "{key} out of order in {line}");
        last = at;
    }
    assert!(line.contains("\"exe\":null"));
    assert!(line.contains("\"time\":\"2023-11-14T22:13:21.123456Z\""));
    // Missing optional keys are tolerated.
    let r: Record = serde_json::from_str(r#"{"event":"exit","pid":5,"exit_code":3}"#).unwrap();
    assert_eq!((r.pid, r.exit_code, r.signal), (5, Some(3), None));
}

#[test]
fn human_lines() {
    let f = fork(123);
    assert_eq!(
        f.human(),
        format!("{} crond fork pid=123 ppid=100 creator=100 comm=sh", f.time)
    );
    let mut exit = Record {
        exit_code: Some(3),
        ..fork(123)
    };
    exit.event = "exit".into();
    assert!(exit.human().contains(" crond exit pid=123 code=3"));
    exit.exit_code = None;
    exit.signal = Some(Signal::name_of(9));
    assert!(exit.human().contains(" exit pid=123 killed by SIGKILL"));
    let mut exec = Record {
        exe: Some("/bin/sleep".into()),
        argv: Some(vec!["sleep".into(), "100".into()]),
        ..fork(123)
    };
    exec.event = "exec".into();
    assert!(exec
        .human()
        .contains(" exec pid=123 exe=/bin/sleep argv=\"sleep 100\""));
    let lost = Record::lost(17, at(0));
    assert_eq!(
        lost.human(),
        format!("{} lost 17 events (ring buffer full)", lost.time)
    );
}

#[test]
fn from_event_maps_fields() {
    let ev = TrackedEvent {
        prev_service_id: 0,
        kind: Kind::Exit,
        pid: 10,
        ppid: 1,
        creator_pid: 0,
        service_id: 3,
        time_ns: 5,
        start_ns: 6,
        cgroup_id: 7,
        comm: "sh".into(),
        filename: None,
        exit_code: None,
        signal: Some(9),
    };
    let r = Record::from_event(&ev, "web", at(0));
    assert_eq!(r.event, "exit");
    assert_eq!(r.creator_pid, None);
    assert_eq!(r.signal.as_deref(), Some("SIGKILL"));
    assert_eq!((r.service.as_str(), r.service_id, r.pid), ("web", 3, 10));
}

#[test]
fn rotation_keeps_at_most_keep_plus_one_files_in_order() {
    let t = TestDir::new("rotation");
    let line_len = fork(1000).to_json_line().unwrap().len() as u64;
    let cfg = t.cfg(line_len * 3, 2);
    let mut w = Writer::open(&cfg).unwrap();
    for pid in 1000..1020 {
        w.append(&fork(pid)).unwrap();
    }
    w.flush().unwrap();
    assert_eq!(
        journal_files(&t.0),
        vec!["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    );
    for name in journal_files(&t.0) {
        assert!(fs::metadata(t.0.join(name)).unwrap().len() <= cfg.max_bytes);
    }
    let out = read_all(&t.0).unwrap();
    assert!(out.skipped.is_empty());
    // 20 records, 3 per file: 2 in the active file and 3 in each of the 2 rotated ones.
    assert_eq!(pids(&out.records), (1012..1020).collect::<Vec<_>>());
}

#[test]
fn rotation_drops_files_beyond_a_smaller_keep() {
    let t = TestDir::new("shrink");
    let line_len = fork(1000).to_json_line().unwrap().len() as u64;
    {
        let mut w = Writer::open(&t.cfg(line_len, 4)).unwrap();
        for pid in 0..6 {
            w.append(&fork(pid)).unwrap();
        }
    }
    assert_eq!(journal_files(&t.0).len(), 5);
    let mut w = Writer::open(&t.cfg(line_len, 1)).unwrap();
    w.append(&fork(6)).unwrap();
    w.flush().unwrap();
    assert_eq!(journal_files(&t.0), vec!["events.jsonl", "events.jsonl.1"]);
    assert_eq!(pids(&read_all(&t.0).unwrap().records), vec![5, 6]);
}

fn write_and_tear(t: &TestDir) {
    {
        let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
        for pid in 1..=3 {
            w.append(&fork(pid)).unwrap();
        }
        w.flush().unwrap();
    }
    let path = active_path(&t.0);
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
}

#[test]
fn torn_tail_is_skipped_not_fatal() {
    let t = TestDir::new("torn");
    write_and_tear(&t);
    let out = read_all(&t.0).unwrap();
    assert_eq!(pids(&out.records), vec![1, 2]);
    assert_eq!(
        out.skipped,
        vec!["events.jsonl: line 3 is torn or corrupt, skipped".to_string()]
    );
}

#[test]
fn garbage_lines_are_skipped() {
    let t = TestDir::new("garbage");
    fs::create_dir_all(&t.0).unwrap();
    let mut data = fork(1).to_json_line().unwrap();
    data.extend_from_slice(b"not json\n\xff\xfe\n\n");
    data.extend_from_slice(&fork(2).to_json_line().unwrap());
    fs::write(active_path(&t.0), data).unwrap();
    let out = read_all(&t.0).unwrap();
    assert_eq!(pids(&out.records), vec![1, 2]);
    assert_eq!(out.skipped.len(), 2);
    assert!(out.skipped[0].contains("line 2"));
    assert!(out.skipped[1].contains("line 3"));
}

#[test]
fn reopened_writer_starts_a_fresh_line_after_a_torn_tail() {
    let t = TestDir::new("reopen");
    write_and_tear(&t);
    {
        let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
        w.append(&fork(4)).unwrap();
        w.flush().unwrap();
    }
    let out = read_all(&t.0).unwrap();
    assert_eq!(pids(&out.records), vec![1, 2, 4]);
    assert_eq!(out.skipped.len(), 1);
    // A clean file gets no extra newline on reopen.
    let len = fs::metadata(active_path(&t.0)).unwrap().len();
    drop(Writer::open(&t.cfg(1 << 20, 2)).unwrap());
    assert_eq!(fs::metadata(active_path(&t.0)).unwrap().len(), len);
}

#[test]
fn missing_journal_is_empty() {
    let t = TestDir::new("missing");
    assert_eq!(read_all(&t.0).unwrap(), ReadOutcome::default());
    let mut f = Follower::new(&t.0).unwrap();
    assert!(f.poll().unwrap().is_empty());
    // The journal appears later: followed from its start.
    let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
    w.append(&fork(1)).unwrap();
    w.flush().unwrap();
    assert_eq!(pids(&f.poll().unwrap()), vec![1]);
}

#[test]
fn second_writer_fails_clearly() {
    let t = TestDir::new("lock");
    let cfg = t.cfg(1 << 20, 2);
    let w = Writer::open(&cfg).unwrap();
    let err = Writer::open(&cfg).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "another bpfkill daemon is writing the journal in {}",
            t.0.display()
        )),
        "{err}"
    );
    drop(w);
    Writer::open(&cfg).unwrap();
}

#[test]
fn follower_sees_appends_and_partial_lines() {
    let t = TestDir::new("follow");
    let mut w = Writer::open(&t.cfg(1 << 20, 2)).unwrap();
    w.append(&fork(1)).unwrap();
    w.flush().unwrap();
    let mut f = Follower::new(&t.0).unwrap();
    assert!(f.poll().unwrap().is_empty());
    w.append(&fork(2)).unwrap();
    w.append(&fork(3)).unwrap();
    assert!(f.poll().unwrap().is_empty(), "unflushed records are not visible");
    w.flush().unwrap();
    assert_eq!(pids(&f.poll().unwrap()), vec![2, 3]);
    assert!(f.poll().unwrap().is_empty());

    // A line arriving in two pieces is returned once complete.
    let line = fork(4).to_json_line().unwrap();
    let mut raw = OpenOptions::new().append(true).open(active_path(&t.0)).unwrap();
    raw.write_all(&line[..20]).unwrap();
    assert!(f.poll().unwrap().is_empty());
    raw.write_all(&line[20..]).unwrap();
    assert_eq!(pids(&f.poll().unwrap()), vec![4]);
    assert!(f.take_skipped().is_empty());

    // Started in the middle of a line: that fragment is ignored.
    raw.write_all(&line[..20]).unwrap();
    let mut g = Follower::new(&t.0).unwrap();
    raw.write_all(&line[20..]).unwrap();
    raw.write_all(&fork(5).to_json_line().unwrap()).unwrap();
    assert_eq!(pids(&g.poll().unwrap()), vec![5]);
    assert!(g.take_skipped().is_empty());
}

#[test]
fn follower_crosses_rotations() {
    let t = TestDir::new("follow-rotate");
    let line_len = fork(1000).to_json_line().unwrap().len() as u64;
    let mut w = Writer::open(&t.cfg(line_len * 2, 3)).unwrap();
    w.append(&fork(1000)).unwrap();
    w.flush().unwrap();
    let mut f = Follower::new(&t.0).unwrap();
    let mut seen = Vec::new();
    // One rotation between polls.
    for pid in 1001..1004 {
        w.append(&fork(pid)).unwrap();
    }
    w.flush().unwrap();
    seen.extend(pids(&f.poll().unwrap()));
    assert_eq!(seen, vec![1001, 1002, 1003]);
    // Several rotations between polls.
    for pid in 1004..1010 {
        w.append(&fork(pid)).unwrap();
    }
    w.flush().unwrap();
    seen.extend(pids(&f.poll().unwrap()));
    assert_eq!(seen, (1001..1010).collect::<Vec<_>>());
    // Then plain appends on the new active file.
    w.append(&fork(1010)).unwrap();
    w.flush().unwrap();
    assert_eq!(pids(&f.poll().unwrap()), vec![1010]);
    assert!(f.take_skipped().is_empty());
}

#[test]
fn filter_semantics() {
    let lost = Record::lost(3, at(0));
    let r = fork(42);
    assert!(Filter::default().matches(&r));
    let by_service = Filter {
        service: Some("crond".into()),
        ..Filter::default()
    };
    assert!(by_service.matches(&r));
    assert!(Filter {
        service: Some("7".into()),
        ..Filter::default()
    }
    .matches(&r));
    assert!(!Filter {
        service: Some("nginx".into()),
        ..Filter::default()
    }
    .matches(&r));
    assert!(Filter {
        pid: Some(42),
        ..Filter::default()
    }
    .matches(&r));
    assert!(!Filter {
        pid: Some(43),
        ..Filter::default()
    }
    .matches(&r));
    assert!(Filter {
        since_ns: Some(r.time_ns),
        ..Filter::default()
    }
    .matches(&r));
    assert!(!Filter {
        since_ns: Some(r.time_ns + 1),
        ..Filter::default()
    }
    .matches(&r));
    let all = Filter {
        service: Some("nginx".into()),
        pid: Some(1),
        since_ns: Some(u64::MAX),
    };
    assert!(!all.matches(&r));
    assert!(!all.matches(&lost), "since applies to losses");
    let any_time = Filter {
        since_ns: None,
        ..all
    };
    assert!(any_time.matches(&lost), "losses pass the service and pid filters");
    assert!(by_service.matches(&lost));
}
