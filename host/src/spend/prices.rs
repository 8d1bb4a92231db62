//! [`PriceTable`]: what a request costs, from the config's `[[prices]]`
//! first and then the table shipped in `host/data/prices.toml`.
//!
//! Prices are kept as integer pico-USD per token (USD per million tokens
//! times 10^6, exact for prices with up to six decimals), and a request's
//! cost is rounded up to whole nano-USD ([`Nano`]), so sums over many
//! requests are exact integers on every node and in Redis.

use std::collections::HashMap;

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;

use crate::config::PriceConfig;

/// An amount of USD in nano-dollars (10^-9 USD).
pub type Nano = i64;

/// Nano-USD per USD.
pub const NANO_PER_USD: f64 = 1e9;

/// The longest answer assumed for a model whose price gives none, when the
/// request sets no `max_tokens`.
pub const FALLBACK_MAX_OUTPUT_TOKENS: u32 = 32_768;

/// The shipped table.
const SHIPPED: &str = include_str!("../../data/prices.toml");

/// USD as nano-USD, rounded to the nearest (config amounts).
pub fn nano_of_usd(usd: f64) -> Nano {
    (usd * NANO_PER_USD).round() as Nano
}

/// Nano-USD as USD.
pub fn usd_of_nano(nano: Nano) -> f64 {
    nano as f64 / NANO_PER_USD
}

/// Compiles a model glob; `*` also matches `/`.
pub fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid glob `{pattern}`: {}", e.kind()))
}

/// Tokens one answer used, split the way prices are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUse {
    /// Input tokens not read from the provider's prompt cache.
    pub input: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input: u64,
    pub output: u64,
}

/// One model's price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// The glob that matched (for messages).
    pub pattern: String,
    /// Pico-USD per token.
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    /// The model's longest answer.
    pub max_output_tokens: u32,
}

impl Price {
    /// What `tokens` cost, rounded up to whole nano-USD.
    pub fn cost(&self, tokens: TokenUse) -> Nano {
        let pico = u128::from(tokens.input) * u128::from(self.input)
            + u128::from(tokens.cached_input) * u128::from(self.cached_input)
            + u128::from(tokens.output) * u128::from(self.output);
        i64::try_from(pico.div_ceil(1000)).unwrap_or(i64::MAX)
    }
}

fn pico(usd_per_mtok: f64) -> u64 {
    (usd_per_mtok * 1e6).round().max(0.0) as u64
}

struct Entry {
    glob: GlobMatcher,
    provider: Option<String>,
    price: Price,
    /// Set in the config: without `max_output_tokens` it borrows the
    /// shipped table's.
    max_output_tokens: Option<u32>,
}

impl Entry {
    fn new(c: &PriceConfig) -> Result<Self, String> {
        Ok(Self {
            glob: compile_glob(&c.model)?,
            provider: c.provider.clone(),
            max_output_tokens: c.max_output_tokens,
            price: Price {
                pattern: c.model.clone(),
                input: pico(c.input_per_mtok),
                cached_input: pico(c.cached_input_per_mtok.unwrap_or(c.input_per_mtok)),
                output: pico(c.output_per_mtok),
                max_output_tokens: c.max_output_tokens.unwrap_or(FALLBACK_MAX_OUTPUT_TOKENS),
            },
        })
    }

    fn matches(&self, provider: &str, model: &str) -> bool {
        self.provider.as_deref().is_none_or(|p| p == provider) && self.glob.is_match(model)
    }
}

/// The prices in force: the config's entries, then the shipped table.
pub struct PriceTable {
    config: Vec<Entry>,
    shipped: Vec<Entry>,
    /// Answers already found, by provider then model: matching walks every
    /// glob of the shipped table, which was 1.5% of a cache hit's CPU.
    /// Cleared when it reaches [`MEMO_MAX`] models (they come from
    /// requests).
    memo: parking_lot::Mutex<HashMap<String, HashMap<String, Option<Price>>>>,
}

/// Most (provider, model) pairs [`PriceTable`] remembers.
const MEMO_MAX: usize = 4096;

impl std::fmt::Debug for PriceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriceTable")
            .field("config", &self.config.len())
            .field("shipped", &self.shipped.len())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Shipped {
    prices: Vec<PriceConfig>,
}

/// The shipped table's entries, in order.
pub fn shipped() -> Vec<PriceConfig> {
    toml::from_str::<Shipped>(SHIPPED)
        .expect("host/data/prices.toml parses (a unit test checks it)")
        .prices
}

impl PriceTable {
    /// The table for `config` (entries already validated).
    pub fn new(config: &[PriceConfig]) -> Result<Self, String> {
        Ok(Self {
            config: config.iter().map(Entry::new).collect::<Result<_, _>>()?,
            shipped: shipped().iter().map(Entry::new).collect::<Result<_, _>>()?,
            memo: Default::default(),
        })
    }

    /// The price of `model` served by `provider`, if any entry matches.
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        if let Some(known) = self.memo.lock().get(provider).and_then(|m| m.get(model)) {
            return known.clone();
        }
        let price = self.find(provider, model);
        let mut memo = self.memo.lock();
        if memo.values().map(HashMap::len).sum::<usize>() >= MEMO_MAX {
            memo.clear();
        }
        memo.entry(provider.to_owned())
            .or_default()
            .insert(model.to_owned(), price.clone());
        price
    }

    fn find(&self, provider: &str, model: &str) -> Option<Price> {
        if let Some(e) = self.config.iter().find(|e| e.matches(provider, model)) {
            let mut price = e.price.clone();
            if e.max_output_tokens.is_none()
                && let Some(s) = self.shipped.iter().find(|s| s.matches(provider, model))
            {
                price.max_output_tokens = s.price.max_output_tokens;
            }
            return Some(price);
        }
        self.shipped
            .iter()
            .find(|e| e.matches(provider, model))
            .map(|e| e.price.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(model: &str, input: f64, output: f64) -> PriceConfig {
        PriceConfig {
            model: model.into(),
            provider: None,
            input_per_mtok: input,
            output_per_mtok: output,
            cached_input_per_mtok: None,
            max_output_tokens: None,
        }
    }

    #[test]
    fn remembered_prices_are_the_ones_found_and_the_memory_is_bounded() {
        let t = PriceTable::new(&[entry("mine-*", 1.0, 2.0)]).unwrap();
        for (provider, model) in [("openai", "gpt-4o-mini"), ("x", "mine-1"), ("x", "nothing")] {
            let found = t.find(provider, model);
            assert_eq!(t.price(provider, model), found);
            assert_eq!(t.price(provider, model), found, "from memory");
        }
        for i in 0..MEMO_MAX + 10 {
            t.price("p", &format!("unknown-{i}"));
        }
        let held: usize = t.memo.lock().values().map(HashMap::len).sum();
        assert!(held <= MEMO_MAX, "{held} remembered");
    }

    #[test]
    fn the_shipped_table_parses_and_prices_common_models() {
        let t = PriceTable::new(&[]).unwrap();
        let mini = t.price("openai", "gpt-4o-mini").unwrap();
        assert_eq!(mini.pattern, "gpt-4o-mini*", "specific before general");
        assert_eq!((mini.input, mini.output), (150_000, 600_000));
        assert_eq!(mini.max_output_tokens, 16384);
        assert_eq!(
            t.price("x", "gpt-4o-2024-08-06").unwrap().pattern,
            "gpt-4o*"
        );
        assert!(t.price("x", "claude-sonnet-4-5-20250929").is_some());
        assert!(t.price("x", "claude-3-5-haiku-latest").is_some());
        assert!(t.price("x", "no-such-model").is_none());
        for p in shipped() {
            assert!(p.max_output_tokens.is_some(), "{} has a max", p.model);
        }
    }

    #[test]
    fn config_entries_come_first_and_borrow_the_shipped_max() {
        let t = PriceTable::new(&[entry("gpt-4o*", 1.0, 2.0)]).unwrap();
        let p = t.price("openai", "gpt-4o-mini").unwrap();
        assert_eq!((p.input, p.output), (1_000_000, 2_000_000));
        assert_eq!(p.max_output_tokens, 16384);
        let only = PriceConfig {
            provider: Some("other".into()),
            ..entry("*", 9.0, 9.0)
        };
        let t = PriceTable::new(&[only]).unwrap();
        assert_eq!(t.price("openai", "gpt-4o").unwrap().pattern, "gpt-4o*");
        assert_eq!(t.price("other", "x").unwrap().max_output_tokens, 32_768);
    }

    #[test]
    fn costs_are_exact_and_round_up_to_nano_usd() {
        let t = PriceTable::new(&[]).unwrap();
        let mini = t.price("openai", "gpt-4o-mini").unwrap();
        // 1000 in × $0.15/M + 500 out × $0.60/M = $0.00015 + $0.0003.
        let c = mini.cost(TokenUse {
            input: 1000,
            cached_input: 0,
            output: 500,
        });
        assert_eq!(c, 450_000);
        assert_eq!(usd_of_nano(c), 0.00045);
        // One cached token at $0.075/M is 75 nano-USD.
        let one = mini.cost(TokenUse {
            cached_input: 1,
            ..TokenUse::default()
        });
        assert_eq!(one, 75);
        // $0.0001/M is 0.1 nano-USD a token: one token rounds up to 1.
        let tiny = PriceTable::new(&[entry("tiny", 0.0001, 0.0)]).unwrap();
        let tiny = tiny.price("p", "tiny").unwrap();
        assert_eq!(
            tiny.cost(TokenUse {
                input: 1,
                ..TokenUse::default()
            }),
            1
        );
        assert_eq!(
            tiny.cost(TokenUse {
                input: 10,
                ..TokenUse::default()
            }),
            1
        );
        assert_eq!(
            tiny.cost(TokenUse {
                input: 11,
                ..TokenUse::default()
            }),
            2
        );
        assert_eq!(nano_of_usd(0.05), 50_000_000);
    }
}
