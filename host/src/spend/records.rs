//! Spend records: per UTC day, one state hash `spend|<YYYY-MM-DD>` whose
//! fields are `<measure>|<tenant>|<key>|<provider>|<model>` counters, so
//! every node adds to the same totals and `/admin/spend` reads them back
//! grouped any way. Measures: `c` cost and `s` saved (nano-USD), `n`
//! requests, `i` input and `o` output tokens. `key` is `-` without a
//! virtual key; the model comes last and may hold any character.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::period::Date;
use super::prices::{Nano, usd_of_nano};
use crate::state::{HashAdd, State, StateError};

/// How long a day's records are kept.
pub const RETENTION: Duration = Duration::from_secs(400 * 86_400);
/// Longest model name kept in a record (longer ones are cut).
pub const MAX_MODEL_CHARS: usize = 128;
/// Longest range one query may read, in days.
pub const MAX_QUERY_DAYS: i64 = 366;

/// One priced request, as recorded.
#[derive(Debug, Clone, Copy)]
pub struct SpendEvent<'a> {
    pub tenant: &'a str,
    pub key: Option<&'a str>,
    pub provider: &'a str,
    pub model: &'a str,
    pub cost: Nano,
    pub saved: Nano,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

fn day_key(day: Date) -> String {
    format!("spend|{day}")
}

/// The hash additions recording `e` on `day`.
pub fn record(day: Date, e: &SpendEvent<'_>) -> HashAdd {
    // Model names come from requests: cut, so a record field stays small.
    let model: String = e.model.chars().take(MAX_MODEL_CHARS).collect();
    let dims = format!(
        "{}|{}|{}|{model}",
        e.tenant.replace('|', "_"),
        e.key.unwrap_or("-").replace('|', "_"),
        e.provider.replace('|', "_"),
    );
    let mut fields = vec![(format!("n|{dims}"), 1)];
    for (m, v) in [
        ("c", e.cost),
        ("s", e.saved),
        ("i", e.input_tokens as i64),
        ("o", e.output_tokens as i64),
    ] {
        if v != 0 {
            fields.push((format!("{m}|{dims}"), v));
        }
    }
    HashAdd {
        key: day_key(day),
        fields,
        ttl: Some(RETENTION),
    }
}

/// What a report may group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dim {
    Tenant,
    Key,
    Provider,
    Model,
    Day,
}

impl Dim {
    pub const ALL: [Dim; 5] = [Dim::Tenant, Dim::Key, Dim::Model, Dim::Provider, Dim::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Tenant => "tenant",
            Dim::Key => "key",
            Dim::Provider => "provider",
            Dim::Model => "model",
            Dim::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// Totals of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub cost: Nano,
    pub saved: Nano,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

impl Totals {
    fn add(&mut self, measure: &str, v: i64) {
        match measure {
            "c" => self.cost += v,
            "s" => self.saved += v,
            "n" => self.requests += v,
            "i" => self.input_tokens += v,
            "o" => self.output_tokens += v,
            _ => {}
        }
    }

    fn merge(&mut self, o: &Totals) {
        self.cost += o.cost;
        self.saved += o.saved;
        self.requests += o.requests;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
    }
}

/// One row of a report: the group's values (in `group_by` order) and totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub group: Vec<String>,
    pub totals: Totals,
}

/// The spend from `from` to `to` (inclusive, UTC days) grouped by `dims`,
/// rows sorted by group, and the grand total.
pub async fn query(
    state: &State,
    from: Date,
    to: Date,
    dims: &[Dim],
) -> Result<(Vec<Row>, Totals), StateError> {
    let mut groups: BTreeMap<Vec<String>, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for days in from.days()..=to.days() {
        let day = Date::of_days(days);
        for (field, v) in state.budget_hash(&day_key(day)).await? {
            let mut parts = field.splitn(5, '|');
            let (Some(measure), Some(tenant), Some(key), Some(provider), Some(model)) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                continue;
            };
            let day_text = day.to_string();
            let group = dims
                .iter()
                .map(|d| {
                    match d {
                        Dim::Tenant => tenant,
                        Dim::Key => key,
                        Dim::Provider => provider,
                        Dim::Model => model,
                        Dim::Day => &day_text,
                    }
                    .to_owned()
                })
                .collect();
            let mut one = Totals::default();
            one.add(measure, v);
            groups.entry(group).or_default().merge(&one);
            total.merge(&one);
        }
    }
    Ok((
        groups
            .into_iter()
            .map(|(group, totals)| Row { group, totals })
            .collect(),
        total,
    ))
}

/// The totals as JSON fields.
pub fn totals_json(t: &Totals) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("cost_usd".into(), usd_of_nano(t.cost).into());
    m.insert("saved_usd".into(), usd_of_nano(t.saved).into());
    m.insert("cost_nano_usd".into(), t.cost.into());
    m.insert("requests".into(), t.requests.into());
    m.insert("input_tokens".into(), t.input_tokens.into());
    m.insert("output_tokens".into(), t.output_tokens.into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_add_up_and_group() {
        let state = State::memory();
        let day = Date::parse("2026-11-29").unwrap();
        let next = Date::parse("2026-11-30").unwrap();
        let e = SpendEvent {
            tenant: "acme",
            key: None,
            provider: "openai",
            model: "gpt|odd",
            cost: 100,
            saved: 0,
            input_tokens: 10,
            output_tokens: 5,
        };
        for (d, ev) in [
            (day, e),
            (
                day,
                SpendEvent {
                    tenant: "beta",
                    ..e
                },
            ),
            (
                next,
                SpendEvent {
                    saved: 7,
                    cost: 0,
                    ..e
                },
            ),
        ] {
            state
                .budget(&[], false, Some(&record(d, &ev)))
                .await
                .unwrap();
        }
        let (rows, total) = query(&state, day, next, &[Dim::Tenant]).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].group, vec!["acme"]);
        assert_eq!(rows[0].totals.cost, 100);
        assert_eq!(rows[0].totals.saved, 7);
        assert_eq!(rows[0].totals.requests, 2);
        assert_eq!(total.cost, 200);
        assert_eq!(total.input_tokens, 30);
        let (rows, _) = query(&state, day, next, &[Dim::Day, Dim::Model])
            .await
            .unwrap();
        assert_eq!(rows[0].group, vec!["2026-11-29", "gpt|odd"]);
        let (rows, total) = query(&state, next, next, &[]).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(total.cost, 0);
    }
}
