//! Reading a gateway's `/metrics` in tests.

/// The OpenMetrics text at `url` (a node's or gateway's `/metrics`).
pub async fn metrics_text(url: String) -> String {
    reqwest::get(url)
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics text")
}

/// The value of the series `series` (`name{labels}` as exposed) in
/// `text`, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
