//! `/admin/keys`: the virtual-key routes of the admin API (behind its
//! token, see [`crate::admin`]).
//!
//! - `POST   /admin/keys`: create; answers the record and `key`, the
//!   secret, shown this once.
//! - `GET    /admin/keys`: every key (`?tenant=` filters), never a secret.
//! - `GET    /admin/keys/{id}`, `PATCH /admin/keys/{id}` (fields as for a
//!   create; `null` clears one), `DELETE /admin/keys/{id}` (revokes).
//! - `POST   /admin/keys/{id}/rotate`: a new secret; body
//!   `{"grace_seconds": n}` (default 3600) for the previous one.
//!
//! Input errors are 400 with `{"error": "<field>: <reason>", "field"}`; an
//! unknown id is 404 naming `id`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::keys::{InputError, KeyError, KeyRecord, now_ms, parse_input};

/// Largest body a key route accepts.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// The key routes, to merge into the admin router.
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/admin/keys", post(create).get(list))
        .route("/admin/keys/{id}", get(show).patch(update).delete(revoke))
        .route("/admin/keys/{id}/rotate", post(rotate))
}

fn error(status: StatusCode, message: String, field: Option<&str>) -> Response {
    let mut body = json!({"error": message});
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    (status, axum::Json(body)).into_response()
}

fn input_error(e: InputError) -> Response {
    error(StatusCode::BAD_REQUEST, e.to_string(), Some(&e.field))
}

fn key_error(e: KeyError) -> Response {
    match e {
        KeyError::Input(e) => input_error(e),
        KeyError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string(), Some("id")),
        KeyError::Conflict(m) => error(StatusCode::CONFLICT, m, None),
        KeyError::State(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    }
}

fn too_large(body: &Bytes) -> Option<Response> {
    (body.len() > MAX_BODY_BYTES).then(|| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body: at most {MAX_BODY_BYTES} bytes"),
            Some("body"),
        )
    })
}

fn with_secret(record: &KeyRecord, secret: String) -> Value {
    let mut view = record.view(now_ms());
    view["key"] = json!(secret);
    view
}

async fn create(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    if let Some(r) = too_large(&body) {
        return r;
    }
    let input = match parse_input(&body) {
        Ok(i) => i,
        Err(e) => return input_error(e),
    };
    match gw.keys.create(input).await {
        Ok((record, secret)) => (
            StatusCode::CREATED,
            axum::Json(with_secret(&record, secret)),
        )
            .into_response(),
        Err(e) => key_error(e),
    }
}

/// `GET /admin/keys` query.
#[derive(Debug, Default, serde::Deserialize)]
struct ListParams {
    tenant: Option<String>,
}

async fn list(State(gw): State<Arc<Gateway>>, Query(params): Query<ListParams>) -> Response {
    match gw.keys.list().await {
        Ok(records) => {
            let now = now_ms();
            let keys: Vec<Value> = records
                .iter()
                .filter(|r| params.tenant.as_ref().is_none_or(|t| &r.tenant == t))
                .map(|r| r.view(now))
                .collect();
            axum::Json(json!({"keys": keys})).into_response()
        }
        Err(e) => key_error(e),
    }
}

async fn show(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    match gw.keys.get(&id).await {
        Ok(record) => axum::Json(record.view(now_ms())).into_response(),
        Err(e) => key_error(e),
    }
}

async fn update(State(gw): State<Arc<Gateway>>, Path(id): Path<String>, body: Bytes) -> Response {
    if let Some(r) = too_large(&body) {
        return r;
    }
    let input = match parse_input(&body) {
        Ok(i) => i,
        Err(e) => return input_error(e),
    };
    match gw.keys.update(&id, input).await {
        Ok(record) => axum::Json(record.view(now_ms())).into_response(),
        Err(e) => key_error(e),
    }
}

async fn revoke(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    match gw.keys.revoke(&id).await {
        Ok(record) => axum::Json(record.view(now_ms())).into_response(),
        Err(e) => key_error(e),
    }
}

/// `POST /admin/keys/{id}/rotate` body.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_seconds: Option<u64>,
}

async fn rotate(State(gw): State<Arc<Gateway>>, Path(id): Path<String>, body: Bytes) -> Response {
    if let Some(r) = too_large(&body) {
        return r;
    }
    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(RotateBody::default())
    } else {
        let mut de = serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize::<_, RotateBody>(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path == "?" {
                "body".to_owned()
            } else {
                path
            };
            InputError::new(field, e.into_inner().to_string())
        })
    };
    let grace = match parsed {
        Ok(b) => b.grace_seconds.map(Duration::from_secs),
        Err(e) => return input_error(e),
    };
    match gw.keys.rotate(&id, grace).await {
        Ok((record, secret)) => axum::Json(with_secret(&record, secret)).into_response(),
        Err(e) => key_error(e),
    }
}
