//! Reads the registry's OpenMetrics encoding ([`crate::scrape::encode`],
//! produced in-process, never fetched over HTTP) back into typed families,
//! so the dashboard sees every series by name, including ones other modules
//! register later.
//!
//! Why the encoding: prometheus-client 0.24 has no read API for
//! histograms or label families; its encoders (text, or protobuf behind a
//! feature that needs `protoc`) are the only way to walk a registry.

use std::collections::BTreeMap;

use serde::Serialize;

/// One metric family: its type and series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, `info`, … as the `# TYPE` line says.
    #[serde(rename = "type")]
    pub kind: String,
    pub series: Vec<Series>,
}

/// One series (one label set) of a family.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    /// Counters and gauges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Histograms: observations so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<f64>,
    /// Histograms: sum of observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
    /// Histograms: `(upper bound, cumulative count)` of the finite buckets,
    /// in order (the `+Inf` bucket is `count`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<(f64, f64)>,
}

/// Every family in `text` by name (the `# TYPE` name: counters without
/// `_total`). Lines that do not parse are skipped.
pub fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                families.entry(name.to_string()).or_default().kind = kind.to_string();
                current = Some(name.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (Some(family_name), Some(sample)) = (current.as_deref(), parse_sample(line)) else {
            continue;
        };
        let Some(suffix) = sample.name.strip_prefix(family_name).map(str::to_owned) else {
            continue;
        };
        let Some(family) = families.get_mut(family_name) else {
            continue;
        };
        add_sample(family, &suffix, sample);
    }
    families
}

fn add_sample(family: &mut Family, suffix: &str, mut sample: Sample) {
    let le = sample.labels.remove("le");
    let series = match family
        .series
        .iter_mut()
        .position(|s| s.labels == sample.labels)
    {
        Some(i) => &mut family.series[i],
        None => {
            family.series.push(Series {
                labels: sample.labels,
                ..Series::default()
            });
            let last = family.series.len() - 1;
            &mut family.series[last]
        }
    };
    match suffix {
        "" | "_total" => series.value = Some(sample.value),
        "_count" => series.count = Some(sample.value),
        "_sum" => series.sum = Some(sample.value),
        "_bucket" => {
            if let Some(bound) = le.and_then(|le| le.parse::<f64>().ok())
                && bound.is_finite()
            {
                series.buckets.push((bound, sample.value));
            }
        }
        // `_created` and anything unknown.
        _ => {}
    }
}

struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// `name{a="x",b="y"} value [timestamp]` or `name value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The labels after `{`, and the text after the closing `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_gauges_histograms_and_escapes() {
        let text = r#"# HELP sluice_requests Client requests.
# TYPE sluice_requests counter
sluice_requests_total{route="/v1/chat/completions",status="200"} 3
sluice_requests_total{route="/v1/chat/completions",status="429"} 1
# TYPE sluice_state_degraded gauge
sluice_state_degraded 0
# TYPE sluice_request_duration_seconds histogram
sluice_request_duration_seconds_sum{route="/v1/embeddings"} 0.5
sluice_request_duration_seconds_count{route="/v1/embeddings"} 2
sluice_request_duration_seconds_bucket{le="0.005",route="/v1/embeddings"} 1
sluice_request_duration_seconds_bucket{le="+Inf",route="/v1/embeddings"} 2
# TYPE sluice_plugin_custom gauge
sluice_plugin_custom{name="a \"quoted\" \\ name"} 1.5
# EOF
"#;
        let f = parse(text);
        let requests = &f["sluice_requests"];
        assert_eq!(requests.kind, "counter");
        assert_eq!(requests.series.len(), 2);
        assert_eq!(requests.series[1].labels["status"], "429");
        assert_eq!(requests.series[1].value, Some(1.0));
        assert_eq!(f["sluice_state_degraded"].series[0].value, Some(0.0));
        let h = &f["sluice_request_duration_seconds"].series[0];
        assert_eq!(h.labels.len(), 1);
        assert_eq!((h.count, h.sum), (Some(2.0), Some(0.5)));
        assert_eq!(h.buckets, vec![(0.005, 1.0)]);
        assert_eq!(
            f["sluice_plugin_custom"].series[0].labels["name"],
            r#"a "quoted" \ name"#
        );
    }

    #[test]
    fn garbage_is_skipped_not_a_panic() {
        for text in ["x{", "# TYPE a counter\na{b=\"c", "a{=}", "a 1 2 3", "{}"] {
            let _ = parse(text);
        }
    }
}
