//! Sending one chat completion and timing it: a hyper 1 client (HTTP/1,
//! keep-alive, one pool for all targets) and the request body, built once
//! and only stamped per request when prompts must be unique.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;

use super::BenchError;
use super::options::{BenchOptions, ResolvedTarget};
use super::record::Failure;

/// How one request went, with the instants the recorder needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    /// First body byte (response headers when the body is empty).
    pub first_byte: Instant,
    /// Last body byte, or the moment the request failed.
    pub done: Instant,
    pub result: Result<(), Failure>,
}

/// Sends requests to the run's targets over a shared connection pool.
pub(crate) struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    targets: Vec<ResolvedTarget>,
    /// Each target's body: its own model when it names one, and the same
    /// bytes every time for a target marked `repeat`.
    bodies: Vec<BodyTemplate>,
    auth: Option<HeaderValue>,
    timeout: Duration,
    get: bool,
}

impl Sender {
    /// A client whose pool keeps up to `pool` idle connections per target:
    /// one per concurrent request, so the steady state opens none.
    pub fn new(
        targets: &[ResolvedTarget],
        opts: &BenchOptions,
        pool: usize,
    ) -> Result<Self, BenchError> {
        let auth = opts
            .bearer
            .as_deref()
            .map(|t| {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    BenchError::Invalid("bearer token is not a valid header value".into())
                })?;
                v.set_sensitive(true);
                Ok::<_, BenchError>(v)
            })
            .transpose()?;
        let mut connector = HttpConnector::new();
        // Small request/response exchanges: Nagle would add latency to both.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .pool_timer(TokioTimer::new())
            // Rounds leave a target's connections idle while others run.
            .pool_idle_timeout(Duration::from_secs(300))
            .build(connector);
        Ok(Self {
            client,
            targets: targets.to_vec(),
            bodies: targets
                .iter()
                .map(|t| {
                    let mut own = opts.clone();
                    if let Some(model) = &t.model {
                        own.model.clone_from(model);
                    }
                    if t.repeat {
                        own.unique = false;
                        own.unique_system = false;
                    }
                    BodyTemplate::new(&own)
                })
                .collect(),
            auth,
            timeout: opts.timeout,
            get: opts.get,
        })
    }

    /// Sends request `seq` to target `target` and reads the whole response.
    pub async fn send(&self, target: usize, seq: u64) -> Exchange {
        match tokio::time::timeout(self.timeout, self.exchange(target, seq)).await {
            Ok(exchange) => exchange,
            Err(_) => {
                let now = Instant::now();
                Exchange {
                    first_byte: now,
                    done: now,
                    result: Err(Failure::Timeout),
                }
            }
        }
    }

    async fn exchange(&self, target: usize, seq: u64) -> Exchange {
        let failed = |failure| {
            let now = Instant::now();
            Exchange {
                first_byte: now,
                done: now,
                result: Err(failure),
            }
        };
        let body = &self.bodies[target];
        let target = &self.targets[target];
        let mut req = if self.get {
            Request::new(Full::new(Bytes::new()))
        } else {
            let mut req = Request::new(Full::new(body.for_request(seq)));
            *req.method_mut() = Method::POST;
            req.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            req
        };
        *req.uri_mut() = target.uri.clone();
        let headers = req.headers_mut();
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        for (name, value) in &target.headers {
            headers.append(name, value.clone());
        }

        let resp = match self.client.request(req).await {
            Ok(resp) => resp,
            Err(e) if e.is_connect() => return failed(Failure::Connect),
            Err(_) => return failed(Failure::Io),
        };
        let status = resp.status();
        let headers_at = Instant::now();
        let mut body = resp.into_body();
        let mut first_byte = None;
        // Read (and drop) every frame: the response counts as done at its
        // last byte, and a fully read body lets the connection be reused.
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) if first_byte.is_none() && f.data_ref().is_some_and(|d| !d.is_empty()) => {
                    first_byte = Some(Instant::now());
                }
                Ok(_) => {}
                Err(_) => return failed(Failure::Io),
            }
        }
        Exchange {
            first_byte: first_byte.unwrap_or(headers_at),
            done: Instant::now(),
            result: if status.is_success() {
                Ok(())
            } else {
                Err(Failure::Status(status.as_u16()))
            },
        }
    }
}

/// The request body: the same bytes every time, or the same JSON with a
/// unique tag spliced into the prompt (one small allocation per request).
enum BodyTemplate {
    Fixed(Bytes),
    Unique { head: Bytes, tail: Bytes, run: u64 },
}

/// Stands in for the unique tag while the template is serialised.
const MARKER: &str = "@@sluice-bench-unique@@";

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [ChatMessage<'a>],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'a str,
    content: &'a str,
}

impl BodyTemplate {
    fn new(opts: &BenchOptions) -> Self {
        let content = if opts.unique && !opts.unique_system {
            format!("{}{MARKER}", opts.prompt)
        } else {
            opts.prompt.clone()
        };
        let system = format!("You are assistant {MARKER}.");
        let user = ChatMessage {
            role: "user",
            content: &content,
        };
        let messages = if opts.unique_system {
            vec![
                ChatMessage {
                    role: "system",
                    content: &system,
                },
                user,
            ]
        } else {
            vec![user]
        };
        let body = ChatBody {
            model: &opts.model,
            messages: &messages,
            stream: opts.stream,
            max_tokens: opts.max_tokens,
        };
        // Serialising plain strings and numbers cannot fail.
        let json = serde_json::to_string(&body).unwrap_or_default();
        // The marker is the last thing in the content (or in the system
        // prompt, before the user's), so search from the end in case the
        // prompt itself contains it.
        let at = if opts.unique_system {
            json.find(MARKER)
        } else {
            json.rfind(MARKER)
        };
        match (opts.unique || opts.unique_system, at) {
            (true, Some(at)) => BodyTemplate::Unique {
                head: Bytes::copy_from_slice(&json.as_bytes()[..at]),
                tail: Bytes::copy_from_slice(&json.as_bytes()[at + MARKER.len()..]),
                // Differs between runs, so a second run against the same
                // gateway still misses its cache.
                run: rand::random(),
            },
            _ => BodyTemplate::Fixed(Bytes::from(json)),
        }
    }

    fn for_request(&self, seq: u64) -> Bytes {
        match self {
            BodyTemplate::Fixed(b) => b.clone(),
            BodyTemplate::Unique { head, tail, run } => {
                let mut b = BytesMut::with_capacity(head.len() + tail.len() + 40);
                b.extend_from_slice(head);
                // Writing to a BytesMut cannot fail.
                let _ = write!(b, " [{run:016x}-{seq}]");
                b.extend_from_slice(tail);
                b.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn fixed_bodies_are_identical_chat_completions() {
        let opts = BenchOptions {
            model: "m1".into(),
            prompt: "say \"hi\"".into(),
            stream: true,
            ..BenchOptions::default()
        };
        let t = BodyTemplate::new(&opts);
        let (a, b) = (t.for_request(1), t.for_request(2));
        assert_eq!(a, b);
        let v = parse(&a);
        assert_eq!(v["model"], "m1");
        assert_eq!(v["stream"], true);
        assert_eq!(v["max_tokens"], 16);
        assert_eq!(v["messages"][0]["role"], "user");
        assert_eq!(v["messages"][0]["content"], "say \"hi\"");
    }

    #[test]
    fn unique_bodies_differ_only_in_the_prompt_tag() {
        let opts = BenchOptions {
            prompt: format!("tricky {MARKER} prompt"),
            unique: true,
            max_tokens: None,
            ..BenchOptions::default()
        };
        let t = BodyTemplate::new(&opts);
        let (a, b) = (parse(&t.for_request(1)), parse(&t.for_request(2)));
        let (ca, cb) = (
            a["messages"][0]["content"].as_str().unwrap(),
            b["messages"][0]["content"].as_str().unwrap(),
        );
        assert_ne!(ca, cb);
        assert!(ca.starts_with(&format!("tricky {MARKER} prompt [")), "{ca}");
        assert!(ca.ends_with("-1]") && cb.ends_with("-2]"));
        assert!(a.get("max_tokens").is_none());
        assert_eq!(a["stream"], false);
    }

    #[test]
    fn unique_system_prompts_differ_and_the_user_prompt_stays() {
        let opts = BenchOptions {
            prompt: format!("same {MARKER} question"),
            unique_system: true,
            ..BenchOptions::default()
        };
        let t = BodyTemplate::new(&opts);
        let (a, b) = (parse(&t.for_request(1)), parse(&t.for_request(2)));
        assert_eq!(a["messages"][0]["role"], "system");
        assert_ne!(a["messages"][0]["content"], b["messages"][0]["content"]);
        assert!(
            a["messages"][0]["content"]
                .as_str()
                .unwrap()
                .ends_with("-1].")
        );
        assert_eq!(a["messages"][1], b["messages"][1]);
        assert_eq!(
            a["messages"][1]["content"],
            format!("same {MARKER} question")
        );
    }
}
