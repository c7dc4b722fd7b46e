//! Runs the compiled test binaries and tallies passed / failed / skipped tests.
//!
//! Used in two places with the same code: by the VM's `/init` (inside a bare initramfs, no
//! cargo) and by `cargo xtask vm-test --host` on the running kernel. Test binaries are
//! libtest executables listed in a manifest; a skipped test is one that appended a line to
//! the file named by `$BPFKILL_SKIP_LOG` (see `bpfkill_tests::skip`), so it is counted as
//! skipped rather than passed.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Prefixes the recap of failed tests' output that precedes the result marker, so that the
/// reasons survive where only the end of a long log is kept.
pub const FAILURE_MARKER: &str = "BPFKILL-FAILURE";
/// At most this many recap lines per test binary ...
const RECAP_LINES: usize = 120;
/// ... and per failed test.
const RECAP_SECTION_LINES: usize = 20;
/// The marker line a suite run ends with: `<RESULT_MARKER> passed=N failed=N skipped=N`.
pub const RESULT_MARKER: &str = "BPFKILL-SUITE-RESULT";
/// The line the VM's init prints last, followed by `ok` or `fail`.
pub const END_MARKER: &str = "BPFKILL-VM-END";
/// Environment variable the test harness appends skipped tests to.
pub const SKIP_LOG_ENV: &str = "BPFKILL_SKIP_LOG";

/// One libtest executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBinary {
    /// Display name (crate and target, e.g. `bpfkill-tests/kill`).
    pub name: String,
    /// Absolute path.
    pub path: PathBuf,
}

/// The manifest format: one `name<TAB>path` line per binary; `env<TAB>KEY<TAB>VALUE` lines set
/// environment variables for every binary; `arg<TAB>ARG` lines add arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Test executables, in run order.
    pub binaries: Vec<TestBinary>,
    /// Environment for each binary.
    pub env: Vec<(String, String)>,
    /// Arguments for each binary (e.g. `--test-threads=2`, a filter).
    pub args: Vec<String>,
}

impl Manifest {
    /// Serialises the manifest.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.env {
            out.push_str(&format!("env\t{k}\t{v}\n"));
        }
        for a in &self.args {
            out.push_str(&format!("arg\t{a}\n"));
        }
        for b in &self.binaries {
            out.push_str(&format!("bin\t{}\t{}\n", b.name, b.path.display()));
        }
        out
    }

    /// Parses what [`Manifest::render`] wrote.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut m = Manifest::default();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let fields: Vec<&str> = line.splitn(3, '\t').collect();
            match fields.as_slice() {
                ["env", k, v] => m.env.push((k.to_string(), v.to_string())),
                ["arg", a] => m.args.push(a.to_string()),
                ["bin", name, path] => m.binaries.push(TestBinary {
                    name: name.to_string(),
                    path: PathBuf::from(path),
                }),
                _ => return Err(format!("manifest line {}: cannot parse {line:?}", n + 1)),
            }
        }
        Ok(m)
    }
}

/// The kernel command-line parameter that names the test binaries a VM runs (all if absent).
pub const TESTS_PARAM: &str = "bpfkill.tests";

/// Which test binaries a VM runs: `bpfkill.tests=a,b` those named, `bpfkill.tests=-a,b`
/// every one but those (so that one kernel's suite can be split over two VMs without a new
/// test binary falling between them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<'a> {
    /// The names.
    pub names: Vec<&'a str>,
    /// True when the names are the ones left out.
    pub except: bool,
}

impl Selection<'_> {
    /// True when the binary `name` runs.
    pub fn runs(&self, name: &str) -> bool {
        self.names.contains(&name) != self.except
    }
}

/// The selection `bpfkill.tests=` makes on a kernel command line, if it is there.
pub fn only_tests(cmdline: &str) -> Option<Selection<'_>> {
    let value = cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(TESTS_PARAM)?.strip_prefix('='))?;
    let (except, value) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    Some(Selection {
        names: value.split(',').filter(|n| !n.is_empty()).collect(),
        except,
    })
}

/// Test counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Tests that passed (not counting skipped ones).
    pub passed: u32,
    /// Tests that failed, plus binaries that crashed without a summary.
    pub failed: u32,
    /// Tests that skipped themselves (or were ignored).
    pub skipped: u32,
    /// Names of binaries with failures.
    pub failing_binaries: Vec<String>,
    /// Skipped tests with their reasons.
    pub skips: Vec<String>,
    /// What the failed tests printed (libtest's `---- NAME stdout ----` sections), each line
    /// prefixed with its binary's name.
    pub failures: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Tally {
    /// The marker line.
    pub fn marker(&self) -> String {
        format!(
            "{RESULT_MARKER} passed={} failed={} skipped={}",
            self.passed, self.failed, self.skipped
        )
    }

    /// Parses a marker line (anywhere in `line`).
    pub fn from_marker(line: &str) -> Option<Tally> {
        let rest = &line[line.find(RESULT_MARKER)? + RESULT_MARKER.len()..];
        let mut t = Tally::default();
        for kv in rest.split_whitespace() {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let slot = match k {
                "passed" => &mut t.passed,
                "failed" => &mut t.failed,
                "skipped" => &mut t.skipped,
                _ => continue,
            };
            *slot = v.parse().ok()?;
        }
        Some(t)
    }
}

enum Msg {
    Line(String),
    Exited(std::io::Result<std::process::ExitStatus>),
}

/// Collects the sections libtest prints for failed tests: in its `failures:` area, each
/// `---- NAME stdout ----` section (the panic message and the test's own output) up to the
/// closing `failures:` list. Passing tests' output (`successes:`, with `--show-output`) is
/// left out.
#[derive(Default)]
struct Recap {
    /// Between the `failures:` header and the closing list.
    in_failures: bool,
    /// Inside one failed test's section.
    in_section: bool,
    /// Lines kept of the current section.
    section_lines: usize,
    lines: Vec<String>,
}

impl Recap {
    fn see(&mut self, line: &str) {
        match line {
            "failures:" => {
                // The header opens the area; the list after the sections closes it.
                self.in_failures = !self.in_section;
                self.in_section = false;
                return;
            }
            "successes:" => {
                self.in_failures = false;
                self.in_section = false;
                return;
            }
            _ => {}
        }
        if line.starts_with("---- ") && line.ends_with(" stdout ----") {
            self.in_section = self.in_failures;
            self.section_lines = 0;
        }
        if !self.in_section || line.trim().is_empty() || self.lines.len() >= RECAP_LINES {
            return;
        }
        // A long message (a pretty-printed listing) is cut; where it panicked is kept.
        if self.section_lines < RECAP_SECTION_LINES || line.contains(" panicked at ") {
            self.lines.push(line.to_string());
            self.section_lines += 1;
        }
    }
}

/// Counts from a libtest summary line (`test result: ok. 3 passed; 1 failed; 2 ignored; ...`).
fn parse_summary(line: &str) -> Option<(u32, u32, u32)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut out = (0, 0, 0);
    for part in counts.split(';') {
        let mut it = part.split_whitespace();
        let (Some(n), Some(what)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else { continue };
        match what {
            "passed" => out.0 = n,
            "failed" => out.1 = n,
            "ignored" => out.2 = n,
            _ => {}
        }
    }
    Some(out)
}

/// Runs every binary of the manifest in turn, streaming its output to stdout, and tallies.
/// `skip_log` is a scratch file path for the skip records.
pub fn run(manifest: &Manifest, skip_log: &Path) -> Tally {
    let started = Instant::now();
    let mut tally = Tally::default();
    let stdout = std::io::stdout();
    for bin in &manifest.binaries {
        let _ = std::fs::remove_file(skip_log);
        println!("\n=== {} ({})", bin.name, bin.path.display());
        let (reader, writer) = match std::io::pipe() {
            Ok(p) => p,
            Err(e) => {
                println!("cannot create a pipe: {e}");
                tally.failed += 1;
                tally.failing_binaries.push(bin.name.clone());
                continue;
            }
        };
        let spawned = writer.try_clone().and_then(|w2| {
            Command::new(&bin.path)
                .args(&manifest.args)
                // Panic messages without stack traces keep the failure recap short.
                .env("RUST_BACKTRACE", "0")
                .envs(manifest.env.iter().map(|(k, v)| (k, v)))
                .env(SKIP_LOG_ENV, skip_log)
                .stdin(Stdio::null())
                .stdout(writer)
                .stderr(w2)
                .spawn()
        });
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                println!("cannot start {}: {e}", bin.path.display());
                tally.failed += 1;
                tally.failing_binaries.push(bin.name.clone());
                continue;
            }
        };
        // The binary's own exit ends its run, not the end of its output: a process it leaked
        // may hold the pipe open forever. Lines already written are drained for a moment.
        let (tx, rx) = mpsc::channel::<Msg>();
        let lines_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(Msg::Line(line)).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            let mut child = child;
            let _ = tx.send(Msg::Exited(child.wait()));
        });
        let mut summary = None;
        let mut recap = Recap::default();
        let mut show = |line: String| {
            if let Some(s) = parse_summary(&line) {
                summary = Some(s);
            }
            recap.see(&line);
            let mut out = stdout.lock();
            let _ = writeln!(out, "{line}");
        };
        let mut status = Err(std::io::Error::other("the test binary vanished"));
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Line(line) => show(line),
                Msg::Exited(st) => {
                    status = st;
                    break;
                }
            }
        }
        let grace = Instant::now() + Duration::from_secs(2);
        loop {
            match rx.recv_timeout(grace.saturating_duration_since(Instant::now())) {
                Ok(Msg::Line(line)) => show(line),
                Ok(Msg::Exited(_)) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    println!("{}: processes it left behind still hold its output", bin.name);
                    break;
                }
            }
        }
        let skips: Vec<String> = std::fs::read_to_string(skip_log)
            .unwrap_or_default()
            .lines()
            .map(|l| format!("{}: {}", bin.name, l.replace('\t', ": ")))
            .collect();
        let ok = status.as_ref().is_ok_and(|s| s.success());
        match summary {
            Some((passed, failed, ignored)) => {
                let skipped = (skips.len() as u32).min(passed);
                tally.passed += passed - skipped;
                tally.skipped += skipped + ignored;
                tally.failed += failed;
                if failed > 0 || !ok {
                    if failed == 0 {
                        tally.failed += 1;
                    }
                    tally.failing_binaries.push(bin.name.clone());
                }
            }
            None => {
                println!("{} ended without a test summary: {status:?}", bin.name);
                tally.failed += 1;
                tally.failing_binaries.push(bin.name.clone());
            }
        }
        tally.skips.extend(skips);
        if tally.failing_binaries.last() == Some(&bin.name) {
            if summary.is_none() {
                recap
                    .lines
                    .push(format!("ended without a test summary: {status:?}"));
            }
            tally
                .failures
                .extend(recap.lines.into_iter().map(|l| format!("{}: {l}", bin.name)));
        }
    }
    let _ = std::fs::remove_file(skip_log);
    tally.elapsed = started.elapsed();
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recaps_the_failed_tests_output() {
        let mut r = Recap::default();
        for line in [
            "test a ... ok",
            "test b ... FAILED",
            "",
            "successes:",
            "",
            "---- a stdout ----",
            "output of a passing test",
            "",
            "successes:",
            "    a",
            "",
            "failures:",
            "",
            "---- b stdout ----",
            "thread 'b' panicked at tests/x.rs:1:1:",
            "boom",
            "",
            "failures:",
            "    b",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored",
        ] {
            r.see(line);
        }
        assert_eq!(
            r.lines,
            [
                "---- b stdout ----",
                "thread 'b' panicked at tests/x.rs:1:1:",
                "boom"
            ]
        );
    }

    #[test]
    fn reads_the_tests_a_kernel_command_line_names() {
        let only = only_tests("console=ttyS0 bpfkill.tests=escape,kill quiet").unwrap();
        assert_eq!(only.names, vec!["escape", "kill"]);
        assert!(only.runs("kill") && !only.runs("bomb"));
        let except = only_tests("console=ttyS0 bpfkill.tests=-escape,kill quiet").unwrap();
        assert_eq!(except.names, vec!["escape", "kill"]);
        assert!(!except.runs("kill") && except.runs("bomb"));
        assert_eq!(only_tests("console=ttyS0 bpfkill.testsx=a"), None);
        assert_eq!(only_tests("console=ttyS0 quiet"), None);
    }

    #[test]
    fn parses_libtest_summaries() {
        assert_eq!(
            parse_summary("test result: ok. 13 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 4.2s"),
            Some((13, 0, 2))
        );
        assert_eq!(
            parse_summary("test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out"),
            Some((1, 3, 0))
        );
        assert_eq!(parse_summary("running 3 tests"), None);
    }

    #[test]
    fn manifest_and_marker_round_trip() {
        let m = Manifest {
            binaries: vec![TestBinary {
                name: "t/kill".into(),
                path: "/x/kill-1".into(),
            }],
            env: vec![("BPFKILL_BIN".into(), "/x/bpfkill".into())],
            args: vec!["--test-threads=2".into()],
        };
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
        assert!(Manifest::parse("what\n").is_err());
        let t = Tally {
            passed: 5,
            failed: 1,
            skipped: 2,
            ..Tally::default()
        };
        let back = Tally::from_marker(&format!("[ 12.3] {} elapsed=3.5s", t.marker())).unwrap();
        assert_eq!((back.passed, back.failed, back.skipped), (5, 1, 2));
    }
}
