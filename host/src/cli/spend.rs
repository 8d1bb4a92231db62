//! `sluice spend`: the spend records of `GET /admin/spend` as a table (or
//! the JSON / CSV the node answers).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// `sluice spend` options.
#[derive(Debug, clap::Args)]
pub struct SpendArgs {
    /// The node's admin base URL (its `server.admin_listen`, or `server.listen`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub admin: String,
    /// The admin bearer token.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// First UTC day, YYYY-MM-DD (default: `--to`).
    #[arg(long)]
    pub from: Option<String>,
    /// Last UTC day, YYYY-MM-DD (default: today).
    #[arg(long)]
    pub to: Option<String>,
    /// Comma-separated: tenant, key, model, provider, day.
    #[arg(long, default_value = "tenant")]
    pub group_by: String,
    /// table, json or csv.
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// Fetches and prints the report.
pub async fn run(args: SpendArgs) -> anyhow::Result<ExitCode> {
    let token = args
        .token
        .as_deref()
        .context("--token (or SLUICE_ADMIN_TOKEN) is required")?;
    let wire = match args.format.as_str() {
        "table" | "json" => "json",
        "csv" => "csv",
        other => bail!("--format {other:?}: table, json or csv"),
    };
    let mut query = vec![("group_by", args.group_by.clone()), ("format", wire.into())];
    if let Some(from) = &args.from {
        query.push(("from", from.clone()));
    }
    if let Some(to) = &args.to {
        query.push(("to", to.clone()));
    }
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("HTTP client")?
        .get(format!("{}/admin/spend", args.admin.trim_end_matches('/')))
        .query(&query)
        .bearer_auth(token)
        .send()
        .await
        .context("reaching the admin API")?;
    let status = resp.status();
    let text = resp.text().await.context("reading the answer")?;
    if !status.is_success() {
        let reason = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{status}: {reason}");
    }
    match args.format.as_str() {
        "csv" => print!("{text}"),
        "json" => println!("{text}"),
        _ => {
            let body: Value = serde_json::from_str(&text).context("reading the answer")?;
            print!("{}", table(&body));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The report as an aligned text table with a total line.
pub fn table(body: &Value) -> String {
    let dims: Vec<String> = body["group_by"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let measures = [
        ("cost_usd", "COST_USD"),
        ("saved_usd", "SAVED_USD"),
        ("requests", "REQUESTS"),
        ("input_tokens", "INPUT_TOKENS"),
        ("output_tokens", "OUTPUT_TOKENS"),
    ];
    let cell = |row: &Value, name: &str| -> String {
        match &row[name] {
            Value::String(s) => s.clone(),
            Value::Number(n) if name.ends_with("_usd") => {
                format!("{:.6}", n.as_f64().unwrap_or(0.0))
            }
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        }
    };
    let mut lines: Vec<Vec<String>> = vec![
        dims.iter()
            .map(|d| d.to_uppercase())
            .chain(measures.iter().map(|(_, h)| (*h).to_owned()))
            .collect(),
    ];
    for row in body["rows"].as_array().into_iter().flatten() {
        lines.push(
            dims.iter()
                .map(|d| cell(row, d))
                .chain(measures.iter().map(|(m, _)| cell(row, m)))
                .collect(),
        );
    }
    let total = &body["total"];
    lines.push(
        dims.iter()
            .enumerate()
            .map(|(i, _)| {
                if i == 0 {
                    "TOTAL".to_owned()
                } else {
                    String::new()
                }
            })
            .chain(measures.iter().map(|(m, _)| cell(total, m)))
            .collect(),
    );
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (v, w))| {
                if c < dims.len() {
                    format!("{v:<w$}")
                } else {
                    format!("{v:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_table_aligns_groups_and_totals() {
        let body = json!({
            "group_by": ["tenant"],
            "rows": [
                {"tenant": "acme", "cost_usd": 0.5, "saved_usd": 0.0, "requests": 12, "input_tokens": 100, "output_tokens": 7},
                {"tenant": "globex-long", "cost_usd": 0.000045, "saved_usd": 0.25, "requests": 3, "input_tokens": 5, "output_tokens": 1}
            ],
            "total": {"cost_usd": 0.500045, "saved_usd": 0.25, "requests": 15, "input_tokens": 105, "output_tokens": 8}
        });
        let t = super::table(&body);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("TENANT       COST_USD"), "{t}");
        assert!(lines[1].starts_with("acme         0.500000"), "{t}");
        assert!(lines[3].starts_with("TOTAL        0.500045"), "{t}");
    }
}
