//! Figures, their targets, the table and `results.json`. Every figure keeps its samples (one
//! per round); the table and the JSON show the median and the spread, and whether the target
//! was met. Nothing is tuned or dropped: a figure that could not be measured says why.

use serde_json::{json, Map, Value};

use super::{median, Scale};

/// A figure's target.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The median must be at most this.
    AtMost(f64),
    /// The median must be below this.
    Below(f64),
    /// Recorded, with no target.
    None,
}

impl Target {
    fn text(self) -> Option<String> {
        match self {
            Target::AtMost(v) => Some(format!("<= {v}")),
            Target::Below(v) => Some(format!("< {v}")),
            Target::None => None,
        }
    }

    fn met(self, v: f64) -> Option<bool> {
        match self {
            Target::AtMost(t) => Some(v <= t),
            Target::Below(t) => Some(v < t),
            Target::None => None,
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Stable key in results.json.
    pub key: &'static str,
    /// What it is, for the table.
    pub label: String,
    /// One value per round (empty when it could not be measured).
    pub samples: Vec<f64>,
    /// "x" (a ratio), "ms", "ns", "KiB", "events/s", "count".
    pub unit: &'static str,
    pub target: Target,
    /// Why there are no samples, or what limited them ("did not finish in 30 s").
    pub note: Option<String>,
    /// More numbers behind the figure (the contenders' own medians, per-event costs).
    pub extra: Map<String, Value>,
}

impl Figure {
    pub fn new(key: &'static str, label: impl Into<String>, unit: &'static str, target: Target) -> Self {
        Self {
            key,
            label: label.into(),
            samples: Vec::new(),
            unit,
            target,
            note: None,
            extra: Map::new(),
        }
    }

    pub fn with_samples(mut self, samples: Vec<f64>) -> Self {
        self.samples = samples;
        self
    }

    pub fn extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    fn stats(&self) -> Option<(f64, f64, f64)> {
        if self.samples.is_empty() {
            return None;
        }
        let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((median(&self.samples), min, max))
    }

    fn met(&self) -> Option<bool> {
        self.stats().and_then(|(m, _, _)| self.target.met(m))
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        match self.stats() {
            Some((m, lo, hi)) => {
                o.insert("median".into(), json!(round(m)));
                o.insert("min".into(), json!(round(lo)));
                o.insert("max".into(), json!(round(hi)));
            }
            None => {
                o.insert("median".into(), Value::Null);
            }
        }
        o.insert(
            "samples".into(),
            json!(self.samples.iter().map(|v| round(*v)).collect::<Vec<_>>()),
        );
        o.insert("unit".into(), json!(self.unit));
        o.insert("target".into(), json!(self.target.text()));
        o.insert("met".into(), json!(self.met()));
        if let Some(n) = &self.note {
            o.insert("note".into(), json!(n));
        }
        for (k, v) in &self.extra {
            o.insert(k.clone(), v.clone());
        }
        Value::Object(o)
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Everything one run measured.
pub struct Results {
    scale: Scale,
    pub figures: Vec<Figure>,
    pub seconds: f64,
    /// Peak memory (KiB) of each daemon the run started and stopped, and the part of its
    /// memory that is mapped BPF maps.
    pub peaks: Vec<(f64, f64)>,
}

impl Results {
    pub fn new(scale: Scale) -> Self {
        Self {
            scale,
            figures: Vec::new(),
            seconds: 0.0,
            peaks: Vec::new(),
        }
    }

    pub fn add(&mut self, f: Figure) {
        let shown = match f.stats() {
            Some((m, lo, hi)) => format!("{m:.3} {} ({lo:.3}..{hi:.3})", f.unit),
            None => f.note.clone().unwrap_or_else(|| "not measured".into()),
        };
        eprintln!("bench: {} = {shown}", f.key);
        self.figures.push(f);
    }

    /// The table, one row per figure.
    pub fn print(&self) {
        println!(
            "\nbpfkill bench: kernel {}, {} cores, {}{}",
            kernel(),
            cores(),
            date(),
            if self.scale.quick { " (--quick)" } else { "" }
        );
        println!(
            "{:<62} {:>12} {:>23} {:>10} {:>7}",
            "figure (median of rounds)", "median", "spread (min..max)", "target", "met"
        );
        for f in &self.figures {
            let (m, spread) = match f.stats() {
                Some((m, lo, hi)) => (
                    format!("{} {}", num(m), f.unit),
                    format!("{}..{}", num(lo), num(hi)),
                ),
                None => ("-".into(), f.note.clone().unwrap_or_default()),
            };
            let met = match f.met() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            };
            println!(
                "{:<62} {:>12} {:>23} {:>10} {:>7}",
                format!("{} [{}]", f.label, f.key),
                m,
                spread,
                f.target.text().unwrap_or_else(|| "-".into()),
                met
            );
            if let (Some(n), Some(_)) = (&f.note, f.stats()) {
                println!("    note: {n}");
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("kernel".into(), json!(kernel()));
        o.insert("cores".into(), json!(cores()));
        o.insert("date".into(), json!(date()));
        o.insert("quick".into(), json!(self.scale.quick));
        o.insert("rounds".into(), json!(self.scale.rounds));
        o.insert("storm".into(), json!(self.scale.storm));
        o.insert("seconds".into(), json!(round(self.seconds)));
        for f in &self.figures {
            o.insert(f.key.into(), f.to_json());
        }
        Value::Object(o)
    }
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn date() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
