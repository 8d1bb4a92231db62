//! The soak driver behind `sluice-soak` (bench/soak.sh): an open-loop mix
//! of request kinds against one gateway for a long time, reported per
//! minute (requests, expected refusals, errors, p99 by kind), so a slow
//! leak or a fault that is not contained shows as a trend.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};

use crate::stats::LatencyStats;

/// One kind of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chat completion from a small fixed set: cache hits after the first.
    Hit,
    /// A chat completion with a unique prompt: a miss every time.
    Miss,
    /// A unique streamed chat completion, read to the end.
    Stream,
    /// A chat completion on a tenant key with a tiny limit: mostly 429.
    Limited,
    /// An embeddings request, from a small fixed set of inputs.
    Embedding,
    /// A paraphrase of a cached question: served by the semantic cache.
    Semantic,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 6] = [
        Kind::Hit,
        Kind::Miss,
        Kind::Stream,
        Kind::Limited,
        Kind::Embedding,
        Kind::Semantic,
    ];

    /// The report label.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hit => "hit",
            Kind::Miss => "miss",
            Kind::Stream => "stream",
            Kind::Limited => "limited",
            Kind::Embedding => "embedding",
            Kind::Semantic => "semantic",
        }
    }

    /// Whether `status` is what this kind expects (a 429 is expected only
    /// of the tenant with the tiny limit).
    pub fn expects(self, status: u16) -> bool {
        status == 200 || (self == Kind::Limited && status == 429)
    }
}

/// The share of each kind in the mix, in per mille; they sum to 1000.
pub const MIX: [(Kind, u32); 6] = [
    (Kind::Hit, 400),
    (Kind::Miss, 200),
    (Kind::Stream, 150),
    (Kind::Limited, 100),
    (Kind::Embedding, 100),
    (Kind::Semantic, 50),
];

/// The kind of request number `seq`: a fixed interleaving (smooth
/// weighted round robin, as nginx balances) that meets [`MIX`] exactly over
/// every 1000 requests and spreads each kind evenly within them.
pub fn kind_of(seq: u64) -> Kind {
    static ORDER: std::sync::OnceLock<Vec<Kind>> = std::sync::OnceLock::new();
    let order = ORDER.get_or_init(|| {
        let mut current = [0i64; MIX.len()];
        (0..1000)
            .map(|_| {
                for (c, (_, share)) in current.iter_mut().zip(MIX) {
                    *c += i64::from(share);
                }
                let (i, _) = current
                    .iter()
                    .enumerate()
                    .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                    .expect("a kind");
                current[i] -= 1000;
                MIX[i].0
            })
            .collect()
    });
    order[(seq % 1000) as usize]
}

/// What the driver needs to know.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The gateway's base URL, `http://127.0.0.1:PORT`.
    pub base: String,
    /// Requests per second, all kinds together.
    pub rate: f64,
    /// How long to run.
    pub duration: Duration,
    /// Report period.
    pub period: Duration,
    /// The model asked for.
    pub model: String,
    /// The embeddings model asked for.
    pub embedding_model: String,
    /// The virtual key of the tenant with the tiny limit.
    pub limited_key: String,
    /// The most requests in flight; a due request beyond it is counted as
    /// `shed` (the gateway is too slow to keep up), not queued.
    pub max_in_flight: usize,
    /// A request not done after this long is an error.
    pub timeout: Duration,
}

/// One report period of one kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindMinute {
    pub kind: &'static str,
    pub sent: u64,
    /// Expected answers (200; 429 for `limited`).
    pub ok: u64,
    /// Expected 429s among `ok`.
    pub limited: u64,
    /// Anything else: other statuses, transport errors, timeouts.
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One report period.
#[derive(Debug, Clone, Serialize)]
pub struct Minute {
    /// 1-based period number.
    pub period: u64,
    pub sent: u64,
    pub errors: u64,
    /// Due requests not sent because `max_in_flight` were outstanding.
    pub shed: u64,
    pub p99_ms: f64,
    pub kinds: Vec<KindMinute>,
    /// The first few error descriptions, for the log.
    pub error_samples: Vec<String>,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Vec<u64>>,
    ok: Vec<u64>,
    limited: Vec<u64>,
    errors: Vec<u64>,
    shed: u64,
    samples: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        let n = Kind::ALL.len();
        Tally {
            latencies: vec![Vec::new(); n],
            ok: vec![0; n],
            limited: vec![0; n],
            errors: vec![0; n],
            ..Tally::default()
        }
    }

    fn minute(&mut self, period: u64) -> Minute {
        let taken = std::mem::replace(self, Tally::new());
        let mut all: Vec<u64> = taken.latencies.iter().flatten().copied().collect();
        let overall = LatencyStats::from_samples(&mut all);
        let kinds = Kind::ALL
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let mut samples = taken.latencies[i].clone();
                let stats = LatencyStats::from_samples(&mut samples);
                KindMinute {
                    kind: kind.name(),
                    sent: taken.latencies[i].len() as u64,
                    ok: taken.ok[i],
                    limited: taken.limited[i],
                    errors: taken.errors[i],
                    p50_ms: stats.as_ref().map_or(0.0, |s| s.p50_us / 1000.0),
                    p99_ms: stats.as_ref().map_or(0.0, |s| s.p99_us / 1000.0),
                }
            })
            .collect::<Vec<_>>();
        Minute {
            period,
            sent: kinds.iter().map(|k| k.sent).sum(),
            errors: kinds.iter().map(|k| k.errors).sum(),
            shed: taken.shed,
            p99_ms: overall.as_ref().map_or(0.0, |s| s.p99_us / 1000.0),
            kinds,
            error_samples: taken.samples,
        }
    }
}

/// Builds request `seq` of kind `kind`.
fn request(opts: &SoakOptions, run: u64, kind: Kind, seq: u64) -> Request<Full<Bytes>> {
    let chat = |prompt: String, stream: bool| {
        serde_json::json!({
            "model": opts.model,
            "max_tokens": 16,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        })
    };
    let (path, body) = match kind {
        Kind::Hit => (
            "/v1/chat/completions",
            chat(format!("soak question {}", seq % 20), false),
        ),
        Kind::Miss => (
            "/v1/chat/completions",
            chat(format!("soak miss {run:x}-{seq}"), false),
        ),
        Kind::Stream => (
            "/v1/chat/completions",
            chat(format!("soak stream {run:x}-{seq}"), true),
        ),
        Kind::Limited => (
            "/v1/chat/completions",
            chat(format!("soak limited {}", seq % 5), false),
        ),
        Kind::Embedding => (
            "/v1/embeddings",
            serde_json::json!({"model": opts.embedding_model, "input": format!("soak text {}", seq % 50)}),
        ),
        Kind::Semantic => {
            const PHRASINGS: [&str; 4] = [
                "How do I reset my password?",
                "how can I reset my password",
                "What are the steps to reset my password?",
                "How do I reset my password please?",
            ];
            let mut prompt = PHRASINGS[(seq % 4) as usize].to_owned();
            // A handful of distinct questions, each asked in four ways.
            let _ = write!(prompt, " (account {})", seq / 4 % 5);
            ("/v1/chat/completions", chat(prompt, false))
        }
    };
    let uri: Uri = format!("{}{path}", opts.base).parse().expect("base URL");
    let mut req = Request::new(Full::new(Bytes::from(body.to_string())));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    req.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if kind == Kind::Limited {
        let value = HeaderValue::from_str(&format!("Bearer {}", opts.limited_key)).expect("key");
        req.headers_mut().insert(AUTHORIZATION, value);
    }
    req
}

/// Runs the soak, calling `report` at the end of every period.
pub async fn run(opts: SoakOptions, mut report: impl FnMut(&Minute)) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(opts.max_in_flight)
        .pool_timer(TokioTimer::new())
        .build(connector);
    let opts = Arc::new(opts);
    let tally = Arc::new(Mutex::new(Tally::new()));
    let permits = Arc::new(Semaphore::new(opts.max_in_flight));
    let run_id = rand::random::<u64>();
    let interval = Duration::from_secs_f64(1.0 / opts.rate);
    let start = Instant::now();
    let mut next_report = opts.period;
    let mut period = 0;
    let mut seq = 0u64;
    loop {
        let due = start + interval.mul_f64(seq as f64);
        let elapsed = start.elapsed();
        if elapsed >= next_report {
            period += 1;
            next_report += opts.period;
            let minute = tally.lock().await.minute(period);
            report(&minute);
        }
        if elapsed >= opts.duration {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let kind = kind_of(seq);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tally.lock().await.shed += 1;
            seq += 1;
            continue;
        };
        let req = request(&opts, run_id, kind, seq);
        let (client, tally, timeout) = (client.clone(), tally.clone(), opts.timeout);
        tokio::spawn(async move {
            let began = Instant::now();
            let outcome = tokio::time::timeout(timeout, async {
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                let status = resp.status().as_u16();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("body: {e}"))?
                    .to_bytes();
                Ok::<_, String>((status, body))
            })
            .await
            .unwrap_or_else(|_| Err("timeout".into()));
            let took = began.elapsed().as_nanos() as u64;
            let i = Kind::ALL.iter().position(|k| *k == kind).expect("kind");
            let mut t = tally.lock().await;
            t.latencies[i].push(took);
            match outcome {
                Ok((status, _)) if kind.expects(status) => {
                    t.ok[i] += 1;
                    if status == 429 {
                        t.limited[i] += 1;
                    }
                }
                Ok((status, body)) => {
                    t.errors[i] += 1;
                    if t.samples.len() < 5 {
                        let text =
                            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                        t.samples.push(format!("{}: {status} {text}", kind.name()));
                    }
                }
                Err(e) => {
                    t.errors[i] += 1;
                    if t.samples.len() < 5 {
                        t.samples.push(format!("{}: {e}", kind.name()));
                    }
                }
            }
            drop(permit);
        });
        seq += 1;
    }
    // Let requests in flight finish (bounded by the timeout), then report
    // the last partial period if any requests landed in it.
    let _ = tokio::time::timeout(
        opts.timeout,
        permits.acquire_many(opts.max_in_flight as u32),
    )
    .await;
    let last = tally.lock().await.minute(period + 1);
    if last.sent > 0 || last.shed > 0 {
        report(&last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_met_over_every_thousand_requests() {
        for offset in [0u64, 1000, 7000] {
            let mut counts = [0u32; 6];
            for seq in offset..offset + 1000 {
                let i = Kind::ALL.iter().position(|k| *k == kind_of(seq)).unwrap();
                counts[i] += 1;
            }
            let want: Vec<u32> = MIX.iter().map(|(_, s)| *s).collect();
            assert_eq!(counts.to_vec(), want);
        }
    }

    #[test]
    fn only_the_limited_kind_expects_429() {
        assert!(Kind::Limited.expects(429));
        assert!(!Kind::Hit.expects(429));
        assert!(!Kind::Stream.expects(502));
        assert!(Kind::Embedding.expects(200));
    }
}
