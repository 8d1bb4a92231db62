//! `[telemetry.otlp]`: spans exported over OTLP/HTTP (protobuf) to an
//! in-test receiver: the request's server span continues the client's
//! `traceparent`, has a child span per phase, plugin calls carry the
//! plugin's version, and the provider receives the trace in `traceparent`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::json;

use crate::support::gateway::{TestGateway, mock, providers};

type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP traces endpoint on a free port; the spans it received.
async fn receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        sink.lock().extend(scope.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1/traces"), spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_cover_phases_plugins_and_propagate_the_trace_upstream() {
    let (endpoint, spans) = receiver().await;
    let up = mock();
    let config = format!(
        "{}\n[telemetry.otlp]\nendpoint = \"{endpoint}\"\nbatch_delay_ms = 100\n\
         [plugins.throttle.config]\nanonymous = {{ requests_per_minute = 1000, tokens_per_minute = 1000000 }}\n",
        providers(&up)
    );
    let gw = TestGateway::start(&config).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "trace me"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The client's trace goes on, and the client is told which it is.
    assert_eq!(r.headers()["x-sluice-trace-id"], trace_id);
    // The provider received the same trace, with the attempt's span as
    // parent.
    let seen = up.last_request().expect("the mock was called");
    let upstream = seen.header("traceparent").expect("traceparent upstream");
    let parts: Vec<&str> = upstream.split('-').collect();
    assert_eq!(parts.len(), 4, "{upstream}");
    assert_eq!(parts[1], trace_id, "{upstream}");
    assert_ne!(parts[2], client_span, "{upstream}");

    // Without a traceparent: a new trace, still returned.
    let r = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a new trace"}]}))
        .send()
        .await
        .unwrap();
    let fresh = r.headers()["x-sluice-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(fresh.len(), 32);
    assert_ne!(fresh, trace_id);

    // Spans arrive within a few batch delays.
    let deadline = Instant::now() + Duration::from_secs(15);
    let ours = loop {
        let ours: Vec<Span> = spans
            .lock()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        if ours.iter().any(|s| s.name == "sluice.request") {
            break ours;
        }
        assert!(Instant::now() < deadline, "no request span exported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_id: HashMap<String, &Span> = ours.iter().map(|s| (hex(&s.span_id), s)).collect();
    let request = ours.iter().find(|s| s.name == "sluice.request").unwrap();
    assert_eq!(hex(&request.parent_span_id), client_span);
    assert_eq!(
        attr(request, "http.route").as_deref(),
        Some("/v1/chat/completions")
    );
    assert_eq!(
        attr(request, "http.response.status_code").as_deref(),
        Some("200")
    );
    let request_id = hex(&request.span_id);

    // One span per phase, children of the request span.
    let phases: Vec<&str> = ours
        .iter()
        .filter(|s| hex(&s.parent_span_id) == request_id)
        .map(|s| s.name.as_str())
        .collect();
    for phase in [
        "auth",
        "read_body",
        "parse",
        "throttle",
        "cache_key",
        "cache_lookup",
        "upstream",
        "respond",
    ] {
        assert!(phases.contains(&phase), "phase {phase} missing: {phases:?}");
    }
    // Plugin calls, with the version serving the slot, under their phase.
    let throttle_hash = gw
        .gw
        .plugins
        .slot(sluice::policy::Slot::Throttle)
        .current()
        .info()
        .hash
        .clone();
    let plugin = ours
        .iter()
        .find(|s| {
            s.name == "sluice.plugin"
                && attr(s, "sluice.plugin.slot").as_deref() == Some("throttle")
        })
        .expect("a throttle plugin span");
    assert_eq!(attr(plugin, "sluice.plugin.version"), Some(throttle_hash));
    assert_eq!(by_id[&hex(&plugin.parent_span_id)].name, "throttle");
    // The upstream attempt's span is the parent the provider saw.
    let attempt = by_id.get(parts[2]).expect("the attempt span was exported");
    assert_eq!(attempt.name, "sluice.upstream_attempt");
    assert_eq!(attr(attempt, "sluice.provider").as_deref(), Some("mock"));
    assert_eq!(by_id[&hex(&attempt.parent_span_id)].name, "upstream");
}

#[tokio::test]
async fn without_an_endpoint_there_are_no_trace_headers() {
    let up = mock();
    let gw = TestGateway::start(&providers(&up)).await;
    let r = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-sluice-trace-id").is_none());
    assert!(up.last_request().unwrap().header("traceparent").is_none());
}
