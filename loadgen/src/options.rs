//! What a benchmark run does: [`BenchOptions`] and the targets it drives.
//! Plain data with defaults, so any front end (the `sluice bench` CLI, a
//! test) can fill it in; [`BenchOptions::validate`] checks it before a run.

use std::collections::HashSet;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use http::Uri;

use super::BenchError;

/// Path used when a target URL names only a host and port.
pub const DEFAULT_PATH: &str = "/v1/chat/completions";

/// One endpoint to load, e.g. `sluice=http://127.0.0.1:8080/v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Short label used in the report.
    pub name: String,
    /// Full URL; must be `http://` to a loopback address.
    pub url: String,
    /// Extra request headers for this target only, as (name, value), e.g.
    /// the routing headers a peer gateway needs.
    pub headers: Vec<(String, String)>,
    /// Send this target the same prompt every time even when the run's
    /// prompts are unique (a cache hit after the first), so hits and misses
    /// are measured in one run.
    pub repeat: bool,
    /// The `model` this target's requests ask for, instead of the run's
    /// (e.g. a model the gateway translates to another provider's API).
    pub model: Option<String>,
}

impl Target {
    /// A target with an explicit name.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            headers: Vec::new(),
            repeat: false,
            model: None,
        }
    }
}

/// Parses `name=url`, or a bare `url` named after its `host:port`.
impl FromStr for Target {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        // A URL has no '=' before its "://", so one there separates the name.
        let scheme_at = s.find("://").unwrap_or(s.len());
        if let Some(eq) = s[..scheme_at].find('=') {
            let (name, url) = (&s[..eq], &s[eq + 1..]);
            if name.is_empty() {
                return Err(BenchError::Target {
                    target: s.to_owned(),
                    reason: "empty name before '='".into(),
                });
            }
            return Ok(Target::new(name, url));
        }
        let uri: Uri = s.parse().map_err(|e| BenchError::Target {
            target: s.to_owned(),
            reason: format!("not a URL: {e}"),
        })?;
        let name = uri.authority().map_or(s, |a| a.as_str()).to_owned();
        Ok(Target::new(name, s))
    }
}

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Open loop: this many requests per second on a fixed timeline, whatever
    /// the targets do. Latency is measured from each request's scheduled send
    /// time, so a stalled target is charged for the requests it delayed
    /// (coordinated omission corrected, as wrk2 does).
    Rate(f64),
    /// Closed loop: this many requests in flight; each connection sends its
    /// next request when the previous one completes. Measures capacity.
    Concurrency(usize),
}

/// How requests are shared between targets so machine noise hits all alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interleave {
    /// Short alternating rounds (A, B, A, B, …): during a round every request
    /// goes to one target, which sees the full load alone. The default: each
    /// target is measured under the same offered load, and slow drift on the
    /// machine (a build starting) lands on every target within seconds.
    /// Warm-up alternates request by request so every target is warmed;
    /// measured rounds start with the first target at the end of warm-up.
    Rounds(Duration),
    /// Request by request (A, B, A, B, …) on one schedule: the finest noise
    /// sharing, but the targets load the machine at the same time and each
    /// sees `1/n` of the rate.
    Requests,
}

/// Everything a benchmark run needs. `Default` is a 10 s open-loop run at
/// 500 req/s after 2 s of warm-up, in 1 s rounds; only `targets` must be set.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Endpoints to load, in the same run. At least one.
    pub targets: Vec<Target>,
    /// Name of the target the others are compared with; `None` = the first.
    pub baseline: Option<String>,
    /// Open loop (rate) or closed loop (concurrency).
    pub load: Load,
    /// Open loop only: the most requests in flight (and so connections) at
    /// once. A due request waits for a free connection, and that wait counts
    /// in its latency. Closed loop uses `Load::Concurrency` instead.
    pub connections: usize,
    /// Measured time of the whole run (after warm-up), shared by the targets.
    pub duration: Option<Duration>,
    /// Measured requests of the whole run (after warm-up), over all targets.
    /// With `duration` too, the run stops at whichever comes first.
    pub requests: Option<u64>,
    /// Time at the start whose requests are sent but not reported.
    pub warmup: Duration,
    /// How targets share the run.
    pub interleave: Interleave,
    /// `model` field of the chat completion.
    pub model: String,
    /// The user message.
    pub prompt: String,
    /// `max_tokens`, when set.
    pub max_tokens: Option<u32>,
    /// Ask for `stream: true` and report time to first byte as well.
    pub stream: bool,
    /// Make every prompt unique (cache misses); otherwise every request is the
    /// same (cache hits after the first).
    pub unique: bool,
    /// Give every request a system prompt of its own (a semantic-cache
    /// namespace of its own, and a cache miss); the user prompt stays.
    pub unique_system: bool,
    /// Send a bodyless `GET` instead of a chat completion: for probing an
    /// endpoint such as `/healthz` while other load runs.
    pub get: bool,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// A request not complete after this long counts as a `timeout` error.
    pub timeout: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            baseline: None,
            load: Load::Rate(500.0),
            connections: 32,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            warmup: Duration::from_secs(2),
            interleave: Interleave::Rounds(Duration::from_secs(1)),
            model: "gpt-4o-mini".into(),
            prompt: "Say hello in one word.".into(),
            max_tokens: Some(16),
            stream: false,
            unique: false,
            unique_system: false,
            get: false,
            bearer: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Highest accepted rate: offsets are whole nanoseconds and must not collide.
const MAX_RATE: f64 = 1_000_000.0;
/// Most requests in flight; far beyond what two cores can serve.
const MAX_IN_FLIGHT: usize = 10_000;
/// Shortest round: shorter ones would be mostly boundary effects.
const MIN_ROUND: Duration = Duration::from_millis(10);

/// A target checked and parsed, ready to send to.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedTarget {
    pub name: String,
    pub uri: Uri,
    pub headers: http::HeaderMap,
    pub repeat: bool,
    pub model: Option<String>,
}

impl BenchOptions {
    /// Checks the options and resolves the targets; the baseline comes back as
    /// an index into the returned targets.
    pub(crate) fn validate(&self) -> Result<(Vec<ResolvedTarget>, usize), BenchError> {
        let invalid = |msg: &str| Err(BenchError::Invalid(msg.to_owned()));
        if self.targets.is_empty() {
            return invalid("at least one target is required");
        }
        match self.load {
            Load::Rate(r) if !(r.is_finite() && r > 0.0 && r <= MAX_RATE) => {
                return invalid("rate must be above 0 and at most 1000000 requests per second");
            }
            Load::Concurrency(c) if c == 0 || c > MAX_IN_FLIGHT => {
                return invalid("concurrency must be between 1 and 10000");
            }
            _ => {}
        }
        if self.connections == 0 || self.connections > MAX_IN_FLIGHT {
            return invalid("connections must be between 1 and 10000");
        }
        if self.duration.is_none() && self.requests.is_none() {
            return invalid("set a duration, a request count, or both: a run must be bounded");
        }
        if self.duration.is_some_and(|d| d.is_zero()) || self.requests == Some(0) {
            return invalid("duration and request count must be above zero");
        }
        if self.timeout.is_zero() {
            return invalid("timeout must be above zero");
        }
        if let Interleave::Rounds(r) = self.interleave
            && r < MIN_ROUND
        {
            return invalid("rounds must last at least 10ms");
        }

        if let (Interleave::Rounds(r), Some(d)) = (self.interleave, self.duration)
            && self.targets.len() > 1
            && d < r.saturating_mul(u32::try_from(self.targets.len()).unwrap_or(u32::MAX))
        {
            return invalid(
                "the duration must hold at least one round per target (duration >= round x targets)",
            );
        }

        let mut names = HashSet::new();
        let mut resolved = Vec::with_capacity(self.targets.len());
        for t in &self.targets {
            if t.name.is_empty() || !names.insert(t.name.as_str()) {
                return Err(BenchError::Target {
                    target: t.name.clone(),
                    reason: "target names must be non-empty and unique".into(),
                });
            }
            let mut headers = http::HeaderMap::new();
            for (name, value) in &t.headers {
                let bad = || BenchError::Target {
                    target: t.name.clone(),
                    reason: format!("{name:?}: {value:?} is not a valid header"),
                };
                let name = http::HeaderName::from_str(name).map_err(|_| bad())?;
                let value = http::HeaderValue::from_str(value).map_err(|_| bad())?;
                headers.append(name, value);
            }
            resolved.push(ResolvedTarget {
                name: t.name.clone(),
                uri: parse_loopback_uri(&t.url)?,
                headers,
                repeat: t.repeat,
                model: t.model.clone(),
            });
        }
        let baseline = match &self.baseline {
            None => 0,
            Some(b) => resolved.iter().position(|t| &t.name == b).ok_or_else(|| {
                BenchError::Invalid(format!("baseline {b:?} is not one of the targets"))
            })?,
        };
        Ok((resolved, baseline))
    }
}

/// Parses a target URL, refusing anything but plain HTTP to a loopback IP:
/// this tool must only ever send load to the machine it runs on.
pub(crate) fn parse_loopback_uri(url: &str) -> Result<Uri, BenchError> {
    let bad = |reason: &str| BenchError::Target {
        target: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|e| bad(&format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// URLs are supported"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let ip = IpAddr::from_str(host.trim_start_matches('[').trim_end_matches(']'));
    if !ip.is_ok_and(|ip| ip.is_loopback()) {
        return Err(BenchError::NotLoopback {
            url: url.to_owned(),
        });
    }
    if uri.path() != "/" {
        return Ok(uri);
    }
    // Only host:port given: aim at the chat completions route.
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static(DEFAULT_PATH));
    Uri::from_parts(parts).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_names() {
        let t: Target = "sluice=http://127.0.0.1:8080/v1/chat/completions"
            .parse()
            .unwrap();
        assert_eq!(
            t,
            Target::new("sluice", "http://127.0.0.1:8080/v1/chat/completions")
        );
        let t: Target = "http://127.0.0.1:9000".parse().unwrap();
        assert_eq!(t, Target::new("127.0.0.1:9000", "http://127.0.0.1:9000"));
        // '=' inside the query is not a name separator.
        let t: Target = "http://127.0.0.1:9000/x?a=b".parse().unwrap();
        assert_eq!(t.url, "http://127.0.0.1:9000/x?a=b");
    }

    #[test]
    fn only_loopback_http_targets_are_accepted() {
        assert!(parse_loopback_uri("http://127.0.0.1:1/v1/chat/completions").is_ok());
        assert!(parse_loopback_uri("http://127.3.4.5:1/").is_ok());
        assert!(parse_loopback_uri("http://[::1]:1/").is_ok());
        for url in [
            "http://10.0.0.1:80/",
            "http://example.com/",
            "http://localhost:80/",
        ] {
            assert!(
                matches!(parse_loopback_uri(url), Err(BenchError::NotLoopback { .. })),
                "{url} must be refused"
            );
        }
        assert!(parse_loopback_uri("https://127.0.0.1:1/").is_err());
        assert!(parse_loopback_uri("not a url").is_err());
    }

    #[test]
    fn bare_host_port_gets_the_chat_path() {
        let uri = parse_loopback_uri("http://127.0.0.1:8080").unwrap();
        assert_eq!(uri.path(), DEFAULT_PATH);
    }

    #[test]
    fn a_run_must_be_bounded_and_have_targets() {
        let mut o = BenchOptions::default();
        assert!(o.validate().is_err(), "no targets");
        o.targets.push(Target::new("a", "http://127.0.0.1:1"));
        o.targets.push(Target::new("b", "http://127.0.0.1:2"));
        assert_eq!(
            o.validate().unwrap().1,
            0,
            "first target is the default baseline"
        );
        o.baseline = Some("b".into());
        assert_eq!(o.validate().unwrap().1, 1);
        o.baseline = Some("c".into());
        assert!(o.validate().is_err());
        o.baseline = None;
        o.duration = None;
        assert!(o.validate().is_err(), "unbounded");
        o.requests = Some(10);
        assert!(o.validate().is_ok());
        o.duration = Some(Duration::from_millis(1500));
        assert!(o.validate().is_err(), "two 1s rounds do not fit in 1.5s");
        o.interleave = Interleave::Requests;
        assert!(o.validate().is_ok());
        o.targets.push(Target::new("a", "http://127.0.0.1:3"));
        assert!(o.validate().is_err(), "duplicate name");
    }
}
