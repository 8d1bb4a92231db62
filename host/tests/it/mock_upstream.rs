//! The mock upstream over real sockets: wire formats as a client sees them
//! (status, headers, raw bytes) and the scripted failures tests rely on.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use sluice::api::{self, SseParser, StreamAccumulator};
use sluice::mock::{self, Fault, MockConfig, MockHandle};
use sluice::policy::{Route, TokenCount};

const KEY: &str = "sk-upstream-test";

fn mock_with_key() -> MockHandle {
    mock::spawn(MockConfig {
        expected_key: Some(KEY.into()),
        ..MockConfig::default()
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post_openai(m: &MockHandle, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(m.url(path))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn post_anthropic(m: &MockHandle, body: &Value) -> reqwest::Response {
    client()
        .post(m.url("/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn chat_body(question: &str) -> Value {
    json!({ "model": "gpt-4o-mini", "messages": [
        { "role": "system", "content": "be brief" },
        { "role": "user", "content": question }
    ]})
}

async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn chat_json_answer_has_the_openai_shape() {
    let m = mock_with_key();
    let body = chat_body("what is sluice?");
    let r = post_openai(&m, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "application/json");
    let v: Value = json_of(r).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(
        choice["message"]["content"],
        "mock answer to: what is sluice?"
    );
    assert_eq!(choice["finish_reason"], "stop");

    // Usage agrees with the gateway's own estimate and counting.
    let parsed = api::parse(Route::Chat, body.to_string().as_bytes()).unwrap();
    let usage = &v["usage"];
    assert_eq!(usage["prompt_tokens"], parsed.estimated_prompt_tokens);
    assert_eq!(
        usage["completion_tokens"],
        api::estimate_tokens("mock answer to: what is sluice?")
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    assert_eq!(m.calls(Route::Chat), 1);
}

#[tokio::test]
async fn chat_stream_is_openai_sse_and_usage_only_when_asked() {
    let m = mock_with_key();
    let question = "tell me a long story about rivers and sluices";
    let mut body = chat_body(question);
    body["stream"] = json!(true);

    let r = post_openai(&m, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "text/event-stream");
    let raw = r.text().await.unwrap();
    assert!(raw.starts_with("data: {"), "{raw}");
    assert!(raw.ends_with("\n\ndata: [DONE]\n\n"), "{raw}");
    assert!(!raw.contains("event:"));
    let events = SseParser::new().feed(raw.as_bytes());
    assert!(events.len() >= 4, "a few content chunks: {raw}");
    let mut text = String::new();
    for e in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert!(
            chunk.get("usage").is_none(),
            "no usage unless asked: {chunk}"
        );
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
    }
    assert_eq!(text, format!("mock answer to: {question}"));
    let finish: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");

    // Asking for usage adds the usage-only chunk just before [DONE].
    body["stream_options"] = json!({ "include_usage": true });
    let raw = post_openai(&m, "/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    let events = SseParser::new().feed(raw.as_bytes());
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let mut acc = StreamAccumulator::new(Route::Chat);
    events.iter().for_each(|e| acc.observe(e));
    assert!(acc.is_complete());
    let reported = acc.reported_usage().unwrap();
    assert_eq!(reported.completion, acc.counted_completion_tokens());
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], reported.prompt);

    // The stream assembles into what the JSON route answers.
    let assembled: Value =
        serde_json::from_slice(&api::stream_to_json(Route::Chat, &events).unwrap()).unwrap();
    body["stream"] = json!(false);
    let direct = json_of(post_openai(&m, "/v1/chat/completions", &body).await).await;
    assert_eq!(assembled["choices"], direct["choices"]);
    assert_eq!(assembled["usage"], direct["usage"]);
}

#[tokio::test]
async fn anthropic_json_and_stream_have_the_anthropic_shape() {
    let m = mock_with_key();
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 256, "system": "be brief",
        "messages": [{ "role": "user", "content": "how do sluices work?" }]
    });
    let r = post_anthropic(&m, &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = json_of(r).await;
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(
        v["content"][0]["text"],
        "mock answer to: how do sluices work?"
    );
    assert_eq!(v["stop_reason"], "end_turn");
    let parsed = api::parse(Route::AnthropicMessages, body.to_string().as_bytes()).unwrap();
    assert_eq!(
        api::usage_from_json(Route::AnthropicMessages, v.to_string().as_bytes()),
        Some(TokenCount::new(
            parsed.estimated_prompt_tokens,
            api::estimate_tokens("mock answer to: how do sluices work?")
        ))
    );

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let r = post_anthropic(&m, &streaming).await;
    assert_eq!(content_type(&r), "text/event-stream");
    let raw = r.text().await.unwrap();
    assert!(raw.starts_with("event: message_start\ndata: {"), "{raw}");
    assert!(
        raw.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{raw}"
    );
    let events = SseParser::new().feed(raw.as_bytes());
    let mut names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    names.dedup();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let mut acc = StreamAccumulator::new(Route::AnthropicMessages);
    events.iter().for_each(|e| acc.observe(e));
    assert!(acc.is_complete());
    assert_eq!(
        acc.reported_usage(),
        api::usage_from_json(Route::AnthropicMessages, v.to_string().as_bytes())
    );
    let assembled: Value =
        serde_json::from_slice(&api::stream_to_json(Route::AnthropicMessages, &events).unwrap())
            .unwrap();
    assert_eq!(assembled["content"], v["content"]);
    assert_eq!(assembled["usage"], v["usage"]);
    assert_eq!(assembled["stop_reason"], "end_turn");
}

#[tokio::test]
async fn forced_tool_calls_stream_as_tool_call_deltas() {
    let m = mock_with_key();
    let body = json!({
        "model": "gpt-4o", "stream": true,
        "messages": [{ "role": "user", "content": "weather in Paris" }],
        "tools": [{ "type": "function", "function": { "name": "get_weather", "parameters": {} } }],
        "tool_choice": "required"
    });
    let raw = post_openai(&m, "/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    let events = SseParser::new().feed(raw.as_bytes());
    let v: Value =
        serde_json::from_slice(&api::stream_to_json(Route::Chat, &events).unwrap()).unwrap();
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        call["function"]["arguments"],
        r#"{"query":"weather in Paris"}"#
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let m = mock_with_key();
    let body = json!({ "model": "text-embedding-3-small", "input": ["the same text", "other", "the same text"] });
    let r = post_openai(&m, "/v1/embeddings", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = json_of(r).await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let vec_of = |i: usize| -> Vec<f64> {
        assert_eq!(data[i]["object"], "embedding");
        assert_eq!(data[i]["index"], i);
        data[i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (a, b, c) = (vec_of(0), vec_of(1), vec_of(2));
    assert_eq!(a.len(), 16);
    assert_eq!(a, c);
    assert_ne!(a, b);
    let norm: f64 = a.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    let parsed = api::parse(Route::Embeddings, body.to_string().as_bytes()).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], parsed.estimated_prompt_tokens);
    assert_eq!(
        api::usage_from_json(Route::Embeddings, v.to_string().as_bytes()),
        Some(TokenCount::new(parsed.estimated_prompt_tokens, 0))
    );
}

#[tokio::test]
async fn models_are_listed() {
    let m = mock_with_key();
    let r = client()
        .get(m.url("/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = json_of(r).await;
    assert_eq!(v["object"], "list");
    assert!(!v["data"].as_array().unwrap().is_empty());
    assert_eq!(m.model_list_calls(), 1);
    assert_eq!(m.total_calls(), 0);
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_401_in_the_providers_shape() {
    let m = mock_with_key();
    let r = client()
        .post(m.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body("hi").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = json_of(r).await;
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["param"], Value::Null);

    // Anthropic wants x-api-key; a bearer token is not enough.
    let r = client()
        .post(m.url("/v1/messages"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(json!({ "model": "c", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = json_of(r).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    let r = client()
        .post(m.url("/v1/embeddings"))
        .bearer_auth("sk-wrong")
        .header("content-type", "application/json")
        .body(json!({ "model": "e", "input": "x" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(m.total_calls(), 3);
}

#[tokio::test]
async fn the_last_request_shows_the_key_and_model_sent() {
    let m = mock_with_key();
    post_openai(&m, "/v1/chat/completions", &chat_body("hi")).await;
    let seen = m.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-upstream-test")
    );
    assert_eq!(seen.model().as_deref(), Some("gpt-4o-mini"));
    assert_eq!(seen.json().unwrap(), chat_body("hi"));
    assert_eq!(m.requests().len(), 1);
}

#[tokio::test]
async fn bad_requests_get_a_400_naming_the_field() {
    let m = mock_with_key();
    let r = client()
        .post(m.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{\"model\": \"m\", \"messages\": [{\"role\": \"user\"}, 5]}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = json_of(r).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages[1]");

    let r = client()
        .post(m.url("/v1/messages"))
        .header("x-api-key", KEY)
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = json_of(r).await;
    assert_eq!(v["type"], "error");
    assert!(v["error"]["message"].as_str().unwrap().contains("line 1"));
}

#[tokio::test]
async fn unknown_paths_are_404_in_openai_shape() {
    let m = mock_with_key();
    let r = client()
        .post(m.url("/v1/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = json_of(r).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn scripted_statuses_come_with_retry_after_then_recover() {
    let m = mock_with_key();
    m.fail_next(2, 429, Some(Duration::from_millis(1500)));
    for _ in 0..2 {
        let r = post_openai(&m, "/v1/chat/completions", &chat_body("hi")).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["retry-after-ms"], "1500");
        let v: Value = json_of(r).await;
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    }
    let r = post_openai(&m, "/v1/chat/completions", &chat_body("hi")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(m.calls(Route::Chat), 3);
    assert_eq!(m.pending_faults(), 0);

    m.fail_next(1, 529, None);
    let r = post_anthropic(
        &m,
        &json!({ "model": "c", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(r.status(), 529);
    assert!(r.headers().get("retry-after").is_none());
    let v: Value = json_of(r).await;
    assert_eq!(v["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn mock_error_models_always_fail_with_their_status() {
    let m = mock_with_key();
    for _ in 0..2 {
        let mut body = chat_body("hi");
        body["model"] = json!("mock-error-503");
        let r = post_openai(&m, "/v1/chat/completions", &body).await;
        assert_eq!(r.status(), 503);
    }
    let r = post_anthropic(
        &m,
        &json!({ "model": "mock-error-429", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = json_of(r).await;
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn random_failure_rates_apply() {
    let m = mock::spawn(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    });
    let r = post_openai(&m, "/v1/chat/completions", &chat_body("hi")).await;
    assert_eq!(r.status(), 500);
    let m = mock::spawn(MockConfig {
        rate_limit_rate: 1.0,
        retry_after: Duration::from_secs(3),
        ..MockConfig::default()
    });
    let r = post_openai(&m, "/v1/chat/completions", &chat_body("hi")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
}

#[tokio::test]
async fn a_truncated_stream_ends_without_its_terminator() {
    let m = mock_with_key();
    let mut body = chat_body("a question long enough to need several chunks of answer");
    body["stream"] = json!(true);
    m.push_fault(Fault::Truncate);
    let r = post_openai(&m, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let raw = r.text().await.unwrap();
    let events = SseParser::new().feed(raw.as_bytes());
    assert!(!events.is_empty());
    let mut acc = StreamAccumulator::new(Route::Chat);
    events.iter().for_each(|e| acc.observe(e));
    assert!(!acc.is_complete(), "{raw}");

    // A truncated JSON body is not JSON.
    m.push_fault(Fault::Truncate);
    let r = post_openai(&m, "/v1/chat/completions", &chat_body("hi")).await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).is_err());
}

#[tokio::test]
async fn an_aborted_stream_fails_mid_body() {
    let m = mock_with_key();
    let mut body = chat_body("a question long enough to need several chunks of answer");
    body["stream"] = json!(true);
    m.push_fault(Fault::Abort);
    let r = post_openai(&m, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        if chunk.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the body must end in an error");
}

#[tokio::test]
async fn a_dropped_connection_gets_no_response() {
    let m = mock_with_key();
    m.push_fault(Fault::Drop);
    let err = client()
        .post(m.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(chat_body("hi").to_string())
        .send()
        .await
        .expect_err("no response");
    assert!(!err.is_status());
    let r = post_openai(&m, "/v1/chat/completions", &chat_body("hi")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(m.calls(Route::Chat), 2);
}

#[tokio::test]
async fn a_delayed_answer_trips_a_client_timeout() {
    let m = mock_with_key();
    m.delay_next(1, Duration::from_secs(5));
    let err = reqwest::Client::new()
        .post(m.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(chat_body("hi").to_string())
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout());
    let r = post_openai(&m, "/v1/chat/completions", &chat_body("hi")).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_down_mock_refuses_connections_and_comes_back() {
    let m = mock_with_key();
    // A pooled keep-alive connection must not survive going down either.
    let c = client();
    let send = || {
        c.post(m.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(chat_body("hi").to_string())
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    m.set_down(true).await.unwrap();
    let err = send().await.expect_err("down");
    assert!(!err.is_status(), "{err}");
    let fresh = client()
        .post(m.url("/v1/chat/completions"))
        .send()
        .await
        .expect_err("refused");
    assert!(fresh.is_connect(), "{fresh}");
    m.set_down(false).await.unwrap();
    assert_eq!(send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn paused_requests_are_held_together_until_resumed() {
    let m = mock_with_key();
    m.pause();
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let url = m.url("/v1/chat/completions");
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(chat_body("hi").to_string())
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    assert!(
        m.wait_until(Duration::from_secs(5), |m| m.in_flight() == 3)
            .await
    );
    assert_eq!(m.calls(Route::Chat), 3);
    m.resume();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(m.max_in_flight(), 3);
    assert!(
        m.wait_until(Duration::from_secs(5), |m| m.in_flight() == 0)
            .await
    );
}

#[tokio::test]
async fn chunk_delay_spreads_a_stream_over_time() {
    let m = mock_with_key();
    m.set_chunk_delay(Duration::from_millis(20));
    let mut body = chat_body("a question long enough to need several chunks of answer");
    body["stream"] = json!(true);
    let r = post_openai(&m, "/v1/chat/completions", &body).await;
    let mut stream = r.bytes_stream();
    let mut reads = 0;
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    while let Some(chunk) = stream.next().await {
        reads += 1;
        parser.feed_into(&chunk.unwrap(), &mut events);
    }
    assert!(reads >= 3, "events arrive separately, got {reads} reads");
    assert!(events.last().unwrap().is_done());
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let m = mock_with_key();
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .post(m.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(chat_body("hi").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn serve_stops_when_shutdown_resolves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mock::serve(listener, MockConfig::default(), async move {
        let _ = stopped.await;
    }));
    let r = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body("hi").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let err = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .expect_err("stopped");
    assert!(err.is_connect(), "{err}");
}
