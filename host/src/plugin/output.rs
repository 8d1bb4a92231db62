//! What a plugin prints (stdout, stderr, a Python or JavaScript exception,
//! a Rust panic message) and why its calls fail: to the gateway log at WARN
//! with the slot and the version, rate-limited, or kept for the caller
//! (`sluice plugin test`). A trap's message carries the tail of what the
//! guest printed, which is where interpreters put the exception.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::instance::CallError;
use crate::policy::Slot;

/// Lines (output or failures) one plugin version may log per [`WINDOW`];
/// the rest are counted and reported once the window ends.
const LINES_PER_WINDOW: u32 = 20;
const WINDOW: Duration = Duration::from_secs(10);

/// Most lines kept while collecting (for `sluice plugin test`).
const MAX_COLLECTED_LINES: usize = 1000;

/// How much of the guest's output a failed call's message carries.
const ERROR_TAIL_BYTES: usize = 1024;

/// The note a Rust runtime adds to every panic (componentize-py's too):
/// nothing an author can act on.
const BACKTRACE_NOTE: &str = "note: run with `RUST_BACKTRACE=1`";

/// The log of one plugin version's guest output and failures.
pub(crate) struct GuestLog {
    slot: Slot,
    /// The first 12 hex digits of the component's blake3.
    version: String,
    window: Mutex<Window>,
    /// Some while collecting instead of logging.
    collected: Mutex<Option<Vec<String>>>,
}

struct Window {
    started: Instant,
    lines: u32,
    suppressed: u64,
}

impl GuestLog {
    pub(crate) fn new(slot: Slot, hash: &str) -> Self {
        Self {
            slot,
            version: hash.chars().take(12).collect(),
            window: Mutex::new(Window {
                started: Instant::now(),
                lines: 0,
                suppressed: 0,
            }),
            collected: Mutex::new(None),
        }
    }

    /// From now on, keep output and failures for [`Self::take_collected`]
    /// instead of logging them.
    pub(crate) fn collect(&self) {
        self.collected.lock().get_or_insert_with(Vec::new);
    }

    /// What was collected since the last take.
    pub(crate) fn take_collected(&self) -> Vec<String> {
        self.collected
            .lock()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Records one call's output (`text`, `dropped` bytes over the capture
    /// cap) and outcome; returns the outcome with a failure's message
    /// extended by the tail of the output.
    pub(crate) fn finish<R>(
        &self,
        text: &str,
        dropped: usize,
        outcome: Result<R, CallError>,
    ) -> Result<R, CallError> {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with(BACKTRACE_NOTE))
            .collect();
        if let Some(collected) = self.collected.lock().as_mut() {
            for line in &lines {
                if collected.len() < MAX_COLLECTED_LINES {
                    collected.push((*line).to_owned());
                }
            }
            if dropped > 0 {
                collected.push(format!("({dropped} more bytes of output were dropped)"));
            }
        } else {
            for line in &lines {
                self.warn(|slot, version| {
                    tracing::warn!(target: "sluice::plugin", slot = %slot, version, "plugin output: {line}")
                });
            }
            if dropped > 0 {
                self.warn(|slot, version| {
                    tracing::warn!(target: "sluice::plugin", slot = %slot, version, dropped, "plugin output over the capture limit was dropped")
                });
            }
        }
        outcome.map_err(|e| with_output_tail(e, &lines))
    }

    /// Logs a failed call (rate-limited); while collecting, the caller
    /// reports it.
    pub(crate) fn failed(&self, error: &CallError) {
        if self.collected.lock().is_some() {
            return;
        }
        self.warn(|slot, version| {
            tracing::warn!(slot = %slot, version, error = %error, "plugin call failed")
        });
    }

    /// Runs `log` unless this window's lines are spent; reports how many
    /// were suppressed once a new window starts.
    fn warn(&self, log: impl FnOnce(Slot, &str)) {
        let mut w = self.window.lock();
        if w.started.elapsed() >= WINDOW {
            let suppressed = std::mem::take(&mut w.suppressed);
            w.started = Instant::now();
            w.lines = 0;
            if suppressed > 0 {
                tracing::warn!(
                    target: "sluice::plugin",
                    slot = %self.slot,
                    version = %self.version,
                    suppressed,
                    "plugin log lines suppressed by the rate limit ({LINES_PER_WINDOW} per {WINDOW:?})"
                );
            }
        }
        if w.lines < LINES_PER_WINDOW {
            w.lines += 1;
            drop(w);
            log(self.slot, &self.version);
        } else {
            w.suppressed += 1;
        }
    }
}

/// A trap or invalid answer, with the last lines the guest printed (an
/// interpreter's exception and traceback) joined by " | ".
fn with_output_tail(e: CallError, lines: &[&str]) -> CallError {
    if lines.is_empty() {
        return e;
    }
    let mut tail: Vec<&str> = Vec::new();
    let mut len = 0;
    for line in lines.iter().rev() {
        let line = line.trim_end();
        if len + line.len() > ERROR_TAIL_BYTES && !tail.is_empty() {
            break;
        }
        len += line.len() + 3;
        tail.push(line);
    }
    tail.reverse();
    let mut tail = tail.join(" | ");
    if tail.len() > ERROR_TAIL_BYTES {
        let mut cut = tail.len() - ERROR_TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = format!("…{}", &tail[cut..]);
    }
    if tail.contains("PyErr {") && tail.contains("traceback: None") {
        // componentize-py failed converting what the policy returned.
        tail.push_str(
            " (raised converting the returned value to the WIT types: a field has the wrong type)",
        );
    }
    match e {
        CallError::Trap(msg) => CallError::Trap(format!("{msg}; guest output: {tail}")),
        CallError::BadAnswer(msg) => CallError::BadAnswer(format!("{msg}; guest output: {tail}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_carries_the_tail_of_the_output() {
        let log = GuestLog::new(Slot::Throttle, "0123456789abcdef");
        log.collect();
        let out: Result<(), _> = log.finish(
            "hello\nTraceback (most recent call last):\n  File \"app.py\", line 3, in admit\nTypeError: boom\n",
            0,
            Err(CallError::Trap("wasm trap: unreachable".into())),
        );
        let msg = out.unwrap_err().to_string();
        assert!(msg.contains("line 3, in admit | TypeError: boom"), "{msg}");
        assert_eq!(log.take_collected().len(), 4);
    }

    #[test]
    fn logging_is_rate_limited_per_version() {
        let log = GuestLog::new(Slot::Throttle, "0123456789abcdef");
        assert_eq!(log.version, "0123456789ab");
        let text = "line\n".repeat(LINES_PER_WINDOW as usize + 5);
        let _ = log.finish(&text, 0, Ok(()));
        log.failed(&CallError::Trap("t".into()));
        let w = log.window.lock();
        assert_eq!(w.lines, LINES_PER_WINDOW);
        assert_eq!(w.suppressed, 6);
    }

    #[test]
    fn a_long_output_is_cut_to_its_tail() {
        let long = "x".repeat(5000) + "\nlast words";
        let e = with_output_tail(
            CallError::Trap("t".into()),
            &long.lines().collect::<Vec<_>>(),
        );
        let msg = e.to_string();
        assert!(msg.ends_with("last words"), "{msg}");
        assert!(msg.len() < ERROR_TAIL_BYTES + 64, "{}", msg.len());
    }
}
