//! OpenTelemetry traces, exported over OTLP (HTTP/protobuf). Off unless
//! `[telemetry.otlp] endpoint` is set; then every API request gets a server
//! span (`sluice.request`), one child span per pipeline phase, one per
//! plugin call (with the plugin's version, its blake3 hash) and one per
//! upstream attempt. A client's W3C `traceparent` becomes the parent; the
//! upstream attempt's context goes to the provider in `traceparent`; the
//! trace id is returned in `x-sluice-trace-id`.
//!
//! The tracer belongs to the [`Traces`] of one gateway, not to a
//! process-wide subscriber: two gateways in one process (tests, tools)
//! export to their own collectors, and with tracing off nothing is built
//! and requests pay one `Option` check. The request's context travels with
//! its future ([`opentelemetry::context::FutureExt::with_context`]), so
//! the plugin runtime and the upstream client find it with
//! [`Context::current`] without a handle on the gateway.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use serde::Deserialize;

/// The response header carrying the request's trace id.
pub const TRACE_ID_HEADER: &str = "x-sluice-trace-id";

/// `[telemetry.otlp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP traces URL, e.g.
    /// `http://collector:4318/v1/traces`. Unset: tracing is off.
    pub endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Longest wait for one export.
    pub timeout_ms: u64,
    /// Spans are sent in batches at least this often.
    pub batch_delay_ms: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "sluice".to_owned(),
            timeout_ms: 10_000,
            batch_delay_ms: 1_000,
        }
    }
}

/// A gateway's tracer, or nothing when tracing is off.
#[derive(Debug, Default)]
pub struct Traces {
    inner: Option<(SdkTracerProvider, SdkTracer)>,
}

/// The tracer, carried in a request's [`Context`] so code below the
/// pipeline can start child spans.
#[derive(Debug, Clone)]
struct RequestTracer(SdkTracer);

impl Traces {
    /// Tracing off.
    pub fn off() -> Self {
        Self::default()
    }

    /// The exporter `config` describes (off without an endpoint). Must run
    /// inside a tokio runtime: exports use it.
    pub fn from_config(config: &OtlpConfig) -> anyhow::Result<Self> {
        let Some(endpoint) = config.endpoint.as_deref() else {
            return Ok(Self::off());
        };
        let client = ExportClient {
            client: reqwest::Client::builder()
                .timeout(Duration::from_millis(config.timeout_ms))
                .build()?,
            runtime: tokio::runtime::Handle::try_current()?,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_millis(config.timeout_ms))
            .build()?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(config.batch_delay_ms))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("sluice");
        Ok(Self {
            inner: Some((provider, tracer)),
        })
    }

    /// Whether spans are recorded.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts a request's server span, child of the client's `traceparent`
    /// when it sent a valid one. `None` when tracing is off.
    pub fn request(&self, headers: &HeaderMap, route: &str, id: &str) -> Option<RequestTrace> {
        let (_, tracer) = self.inner.as_ref()?;
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = tracer
            .span_builder("sluice.request")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("sluice.request_id", id.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        let cx = parent
            .with_span(span)
            .with_value(RequestTracer(tracer.clone()));
        Some(RequestTrace { cx })
    }

    /// Sends the spans not yet exported (blocks up to the export timeout).
    pub fn flush(&self) {
        if let Some((provider, _)) = &self.inner
            && let Err(e) = provider.force_flush()
        {
            tracing::warn!(error = %e, "exporting spans failed");
        }
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Some((provider, _)) = self.inner.take() {
            let _ = provider.shutdown();
        }
    }
}

/// One request's trace: the context holding its server span.
pub struct RequestTrace {
    cx: Context,
}

impl RequestTrace {
    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// The request's context (its server span current).
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Starts the span of one pipeline phase; end it with [`end`].
    pub fn phase(&self, name: &'static str) -> Context {
        child(&self.cx, name, SpanKind::Internal, Vec::new).unwrap_or_else(|| self.cx.clone())
    }

    /// Ends the server span with what the request was answered with.
    pub fn finish(self, status: u16, attributes: Vec<KeyValue>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        for kv in attributes {
            span.set_attribute(kv);
        }
        if status >= 500 {
            span.set_status(Status::error(format!("answered {status}")));
        }
        span.end();
    }
}

/// Starts a child span of `parent`'s span, if `parent` belongs to a traced
/// request; the context with it current. `attributes` is only called then,
/// so an untraced request builds none.
fn child(
    parent: &Context,
    name: &'static str,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Option<Context> {
    let RequestTracer(tracer) = parent.get::<RequestTracer>()?;
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes())
        .start_with_context(tracer, parent);
    Some(parent.with_span(span))
}

/// Starts a child span of the current request's context (none when the
/// current task serves no traced request); `attributes` is called only
/// for a traced one.
pub fn start_child(
    name: &'static str,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Option<Context> {
    child(&Context::current(), name, kind, attributes)
}

/// Ends the span of `cx`, marking it failed with `error`.
pub fn end(cx: &Context, error: Option<&str>) {
    let span = cx.span();
    if let Some(e) = error {
        span.set_status(Status::error(e.to_owned()));
    }
    span.end();
}

/// Adds `cx`'s span as `traceparent` to an upstream request's headers.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The exporter's HTTP client: the gateway's reqwest, run on the gateway's
/// tokio runtime (the batch processor exports from its own thread).
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            let mut out = http::Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, reqwest::Error>(out)
        });
        Ok(task.await??)
    }
}
