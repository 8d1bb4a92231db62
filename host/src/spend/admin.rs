//! `GET /admin/spend?from=&to=&group_by=&format=`: spend records summed
//! over UTC days `from`..=`to` (`YYYY-MM-DD`, default today), grouped by
//! `group_by` (comma-separated: `tenant`, `key`, `model`, `provider`,
//! `day`; default `tenant`), as JSON or, with `format=csv`, CSV.

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::period::Date;
use super::prices::usd_of_nano;
use super::records::{self, Dim, MAX_QUERY_DAYS};
use crate::state::State;

fn bad(field: &str, message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": format!("{field}: {message}"), "field": field})),
    )
        .into_response()
}

/// The report for query `q` over the records in `state` (the handler is
/// in [`crate::admin`], behind the admin token).
pub async fn report(state: &State, q: &HashMap<String, String>) -> Response {
    for name in q.keys() {
        if !["from", "to", "group_by", "format"].contains(&name.as_str()) {
            return bad(name, "unknown parameter (from, to, group_by, format)");
        }
    }
    let today = Date::today();
    let mut dates = [None, None];
    for (slot, field) in dates.iter_mut().zip(["from", "to"]) {
        if let Some(v) = q.get(field) {
            match Date::parse(v) {
                Some(d) => *slot = Some(d),
                None => return bad(field, format!("`{v}` is not a date (YYYY-MM-DD)")),
            }
        }
    }
    let [from, to] = dates;
    let to = to.unwrap_or(today);
    let from = from.unwrap_or(to);
    if from > to {
        return bad("from", format!("{from} is after `to` ({to})"));
    }
    if to.days() - from.days() >= MAX_QUERY_DAYS {
        return bad("to", format!("at most {MAX_QUERY_DAYS} days per query"));
    }
    let mut dims = Vec::new();
    for part in q
        .get("group_by")
        .map_or("tenant", String::as_str)
        .split(',')
    {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match Dim::parse(part) {
            Some(d) if !dims.contains(&d) => dims.push(d),
            Some(_) => {}
            None => {
                return bad(
                    "group_by",
                    format!("`{part}` is not one of tenant, key, model, provider, day"),
                );
            }
        }
    }
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return bad("format", format!("`{other}` is not json or csv")),
    };
    let (rows, total) = match records::query(state, from, to, &dims).await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": format!("spend records could not be read: {e}")})),
            )
                .into_response();
        }
    };
    if csv {
        let mut out = String::new();
        for d in &dims {
            out.push_str(d.as_str());
            out.push(',');
        }
        out.push_str("cost_usd,saved_usd,requests,input_tokens,output_tokens\n");
        for r in &rows {
            for g in &r.group {
                out.push_str(&csv_field(g));
                out.push(',');
            }
            let t = &r.totals;
            out.push_str(&format!(
                "{},{},{},{},{}\n",
                usd_of_nano(t.cost),
                usd_of_nano(t.saved),
                t.requests,
                t.input_tokens,
                t.output_tokens
            ));
        }
        let mut resp = out.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return resp;
    }
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = records::totals_json(&r.totals);
            for (d, g) in dims.iter().zip(&r.group) {
                m.insert(d.as_str().into(), g.clone().into());
            }
            Value::Object(m)
        })
        .collect();
    axum::Json(json!({
        "from": from.to_string(),
        "to": to.to_string(),
        "group_by": dims.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "rows": rows,
        "total": Value::Object(records::totals_json(&total)),
    }))
    .into_response()
}

/// A CSV field, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
