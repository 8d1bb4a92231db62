//! The result of a run: per-target counts, throughput and latency, each
//! target's overhead against the baseline, and the generator's own health.
//! Prints as a table (`Display`) and serialises to JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::driver::Measured;
use super::options::{BenchOptions, Interleave, Load, ResolvedTarget};
use super::stats::LatencyStats;

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When the run started, seconds since the Unix epoch.
    pub started_unix_s: u64,
    pub settings: Settings,
    /// Name of the target the others are compared with.
    pub baseline: String,
    pub targets: Vec<TargetReport>,
    /// One entry per target other than the baseline.
    pub overhead: Vec<Overhead>,
    pub generator: GeneratorReport,
}

/// The options the run used, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// "open-loop" or "closed-loop".
    pub mode: String,
    /// Open loop: offered requests per second.
    pub rate: Option<f64>,
    /// Requests in flight at most (closed loop: always).
    pub concurrency: usize,
    /// "rounds" or "requests".
    pub interleave: String,
    pub round_s: Option<f64>,
    pub warmup_s: f64,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    pub model: String,
    pub stream: bool,
    pub unique: bool,
}

/// What one target did during the measured part of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    pub name: String,
    pub url: String,
    /// Measured requests that completed, successfully or not.
    pub requests: u64,
    /// Those with a 2xx status and a complete body.
    pub ok: u64,
    /// Failures by kind: a status code ("503"), "connect", "timeout", "io".
    pub errors: BTreeMap<String, u64>,
    /// Seconds this target was being loaded (its rounds, or the whole window).
    pub active_s: f64,
    /// `requests / active_s`.
    pub throughput_rps: f64,
    /// Time to last byte of successful requests.
    pub latency: Option<LatencyStats>,
    /// Time to first body byte of successful requests (streaming runs only).
    pub ttfb: Option<LatencyStats>,
}

/// A target against the baseline. Differences are of percentiles (p99 of A
/// minus p99 of B), not percentiles of per-request differences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    pub target: String,
    pub p50: Option<Delta>,
    pub p99: Option<Delta>,
    pub ttfb_p50: Option<Delta>,
    pub ttfb_p99: Option<Delta>,
    /// Target throughput / baseline throughput.
    pub throughput_ratio: Option<f64>,
}

/// One latency figure compared with the baseline's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Target minus baseline, microseconds (negative: target is faster).
    pub diff_us: f64,
    /// Target / baseline.
    pub ratio: Option<f64>,
}

impl Delta {
    fn between(target: f64, baseline: f64) -> Self {
        Self {
            diff_us: target - baseline,
            ratio: ratio(target, baseline),
        }
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// The load generator's own behaviour: if it was late or busy, the figures
/// above are less trustworthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorReport {
    /// What latency is measured from: "scheduled send" (open loop, corrects
    /// coordinated omission) or "actual send" (closed loop).
    pub latency_from: String,
    /// Open loop: how long after its scheduled time each request was sent
    /// (pacer lateness plus waiting for a free connection).
    pub send_delay: Option<LatencyStats>,
    /// The generator's CPU use as a percentage of one core.
    pub cpu_percent: Option<f64>,
    /// Wall-clock length of the whole run, warm-up included.
    pub wall_s: f64,
}

/// Inputs to [`Report::build`] that are not in the options.
pub(crate) struct RunFacts {
    pub started_unix_s: u64,
    pub wall_s: f64,
    pub cpu_ns: Option<u64>,
}

impl Report {
    pub(crate) fn build(
        opts: &BenchOptions,
        targets: &[ResolvedTarget],
        baseline: usize,
        measured: Measured,
        facts: RunFacts,
    ) -> Self {
        let Measured {
            mut recorder,
            window_ns: (from, to),
            ..
        } = measured;
        let warmup_ns = super::record::nanos(opts.warmup);
        let split = super::schedule::Split::new(targets.len(), opts.interleave, warmup_ns);
        let active = split.active_ns(from, to);
        let reports: Vec<TargetReport> = targets
            .iter()
            .zip(recorder.targets.iter_mut())
            .zip(active)
            .map(|((t, s), active_ns)| {
                let requests = s.ok() + s.failed();
                let active_s = active_ns as f64 / 1e9;
                TargetReport {
                    name: t.name.clone(),
                    url: t.uri.to_string(),
                    requests,
                    ok: s.ok(),
                    errors: s.errors.iter().map(|(f, n)| (f.to_string(), *n)).collect(),
                    active_s,
                    throughput_rps: if active_s > 0.0 {
                        requests as f64 / active_s
                    } else {
                        0.0
                    },
                    latency: LatencyStats::from_samples(&mut s.latency_ns),
                    ttfb: LatencyStats::from_samples(&mut s.ttfb_ns),
                }
            })
            .collect();
        let base = &reports[baseline];
        let overhead = reports
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != baseline)
            .map(|(_, t)| overhead(t, base))
            .collect();
        let open = matches!(opts.load, Load::Rate(_));
        Report {
            started_unix_s: facts.started_unix_s,
            settings: Settings::from_options(opts),
            baseline: base.name.clone(),
            targets: reports,
            overhead,
            generator: GeneratorReport {
                latency_from: if open {
                    "scheduled send"
                } else {
                    "actual send"
                }
                .into(),
                send_delay: LatencyStats::from_samples(&mut recorder.send_delay_ns),
                cpu_percent: facts
                    .cpu_ns
                    .filter(|_| facts.wall_s > 0.0)
                    .map(|ns| ns as f64 / 1e9 / facts.wall_s * 100.0),
                wall_s: facts.wall_s,
            },
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Plain data (non-finite floats become null): cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn overhead(t: &TargetReport, base: &TargetReport) -> Overhead {
    let delta =
        |a: Option<LatencyStats>, b: Option<LatencyStats>, pick: fn(&LatencyStats) -> f64| {
            a.zip(b).map(|(a, b)| Delta::between(pick(&a), pick(&b)))
        };
    Overhead {
        target: t.name.clone(),
        p50: delta(t.latency, base.latency, |s| s.p50_us),
        p99: delta(t.latency, base.latency, |s| s.p99_us),
        ttfb_p50: delta(t.ttfb, base.ttfb, |s| s.p50_us),
        ttfb_p99: delta(t.ttfb, base.ttfb, |s| s.p99_us),
        throughput_ratio: ratio(t.throughput_rps, base.throughput_rps),
    }
}

impl Settings {
    fn from_options(o: &BenchOptions) -> Self {
        let (mode, rate, concurrency) = match o.load {
            Load::Rate(r) => ("open-loop", Some(r), o.connections),
            Load::Concurrency(c) => ("closed-loop", None, c),
        };
        let (interleave, round_s) = match o.interleave {
            Interleave::Rounds(d) => ("rounds", Some(d.as_secs_f64())),
            Interleave::Requests => ("requests", None),
        };
        Self {
            mode: mode.into(),
            rate,
            concurrency,
            interleave: interleave.into(),
            round_s,
            warmup_s: o.warmup.as_secs_f64(),
            duration_s: o.duration.map(|d| d.as_secs_f64()),
            requests: o.requests,
            model: o.model.clone(),
            stream: o.stream,
            unique: o.unique || o.unique_system,
        }
    }
}

// === impl Display ===

/// Median send delay above which an open-loop run is flagged: the pacer
/// itself is late by tens of microseconds, so this means real queueing.
const BEHIND_SCHEDULE_US: f64 = 1000.0;

/// A latency in the unit that keeps it short: 87.3µs, 412µs, 1.42ms, 2.10s.
fn dur(us: f64) -> String {
    let a = us.abs();
    if a < 100.0 {
        format!("{us:.1}µs")
    } else if a < 1000.0 {
        format!("{us:.0}µs")
    } else if a < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

fn delta(d: Option<Delta>) -> String {
    match d {
        None => "-".into(),
        Some(d) => {
            let sign = if d.diff_us >= 0.0 { "+" } else { "" };
            let ratio = d.ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x"));
            format!("{sign}{} ({ratio})", dur(d.diff_us))
        }
    }
}

fn latency_table(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    rows: &[(&str, Option<LatencyStats>)],
) -> fmt::Result {
    let w = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    writeln!(
        f,
        "{title:<w$}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "p50", "p90", "p99", "p99.9", "max", "mean"
    )?;
    for (name, stats) in rows {
        match stats {
            Some(s) => writeln!(
                f,
                "{name:<w$}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                dur(s.p50_us),
                dur(s.p90_us),
                dur(s.p99_us),
                dur(s.p999_us),
                dur(s.max_us),
                dur(s.mean_us)
            )?,
            None => writeln!(f, "{name:<w$}  (no successful requests)")?,
        }
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        match s.rate {
            Some(r) => write!(
                f,
                "open loop at {r} req/s (at most {} in flight)",
                s.concurrency
            )?,
            None => write!(f, "closed loop, {} in flight", s.concurrency)?,
        }
        match s.round_s {
            Some(r) => write!(f, ", targets alternating in {r}s rounds")?,
            None => write!(f, ", targets alternating request by request")?,
        }
        write!(f, "; warm-up {}s", s.warmup_s)?;
        if let Some(d) = s.duration_s {
            write!(f, ", measured {d}s")?;
        }
        if let Some(n) = s.requests {
            write!(f, ", at most {n} requests")?;
        }
        writeln!(
            f,
            "\nmodel {}, stream {}, prompts {}; latency from {} time\n",
            s.model,
            if s.stream { "on" } else { "off" },
            if s.unique {
                "unique (cache misses)"
            } else {
                "fixed (cache hits)"
            },
            self.generator.latency_from
        )?;

        let name = |t: &TargetReport| {
            if t.name == self.baseline {
                format!("{} (base)", t.name)
            } else {
                t.name.clone()
            }
        };
        let names: Vec<String> = self.targets.iter().map(name).collect();
        let w = names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        writeln!(
            f,
            "{:<w$}  {:>9} {:>9} {:>9} {:>9}",
            "target", "requests", "ok", "errors", "req/s"
        )?;
        for (t, n) in self.targets.iter().zip(&names) {
            let errors: u64 = t.errors.values().sum();
            writeln!(
                f,
                "{n:<w$}  {:>9} {:>9} {:>9} {:>9.1}",
                t.requests, t.ok, errors, t.throughput_rps
            )?;
        }
        writeln!(f)?;
        let rows: Vec<_> = self
            .targets
            .iter()
            .zip(&names)
            .map(|(t, n)| (n.as_str(), t.latency))
            .collect();
        latency_table(f, "latency", &rows)?;
        if s.stream {
            writeln!(f)?;
            let rows: Vec<_> = self
                .targets
                .iter()
                .zip(&names)
                .map(|(t, n)| (n.as_str(), t.ttfb))
                .collect();
            latency_table(f, "first byte", &rows)?;
        }

        if !self.overhead.is_empty() {
            writeln!(f, "\noverhead vs {}:", self.baseline)?;
            for o in &self.overhead {
                write!(
                    f,
                    "  {}: p50 {}, p99 {}",
                    o.target,
                    delta(o.p50),
                    delta(o.p99)
                )?;
                if s.stream {
                    write!(
                        f,
                        ", first byte p50 {}, p99 {}",
                        delta(o.ttfb_p50),
                        delta(o.ttfb_p99)
                    )?;
                }
                match o.throughput_ratio {
                    Some(r) => writeln!(f, ", throughput {r:.2}x")?,
                    None => writeln!(f)?,
                }
            }
        }

        let failing: Vec<_> = self
            .targets
            .iter()
            .filter(|t| !t.errors.is_empty())
            .collect();
        if !failing.is_empty() {
            writeln!(f, "\nerrors:")?;
            for t in failing {
                let kinds: Vec<_> = t.errors.iter().map(|(k, n)| format!("{k} x{n}")).collect();
                writeln!(f, "  {}: {}", t.name, kinds.join(", "))?;
            }
        }

        if let Some(d) = self.generator.send_delay
            && d.p50_us > BEHIND_SCHEDULE_US
        {
            writeln!(
                f,
                "\nwarning: the median request left {} behind schedule (all connections busy, or \
                 the generator short of CPU); latencies include that wait. Lower --rate, raise \
                 --connections, or quiet the machine.",
                dur(d.p50_us)
            )?;
        }

        write!(f, "\ngenerator:")?;
        if let Some(d) = self.generator.send_delay {
            write!(
                f,
                " send delay p50 {}, p99 {}, max {};",
                dur(d.p50_us),
                dur(d.p99_us),
                dur(d.max_us)
            )?;
        }
        if let Some(c) = self.generator.cpu_percent {
            write!(f, " CPU {c:.0}% of one core;")?;
        }
        writeln!(f, " wall {:.1}s", self.generator.wall_s)
    }
}
