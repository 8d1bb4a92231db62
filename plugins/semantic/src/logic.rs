//! Semantic-cache decisions over plain request data.
//!
//! `prepare` offers a probe only for a chat or Anthropic-messages request
//! whose final message is a text-only user message: that text is embedded.
//! The namespace is a hash of everything else that shapes the answer (route,
//! model, system prompts, earlier turns, answer-format parameters), so a
//! cached answer is only ever offered to a request asked in the same context.
//!
//! `accept` takes the index's nearest candidate only when its score reaches
//! the threshold AND the structural guards ([`crate::guards`]) find no
//! difference that changes the answer: other numbers or negations, an
//! antonym, another time, unit, scope, role or language, another entity, or
//! the same words in an order that swaps who does what. "Convert 5 km to
//! miles" must not be answered with the answer for "convert 50 km to miles",
//! nor "flights from London to Paris" with the one for "from Paris to
//! London", however close their embeddings are.
//!
//! Config (all fields optional):
//! - `threshold` (0.92): minimum cosine similarity, in (0, 1].
//! - `guards` (true): apply the structural guards. With false only the
//!   threshold decides, which serves wrong answers for near-misses that
//!   embed close (see bench/README.md); meant for a deployment whose
//!   embedder or pair model does that job.
//! - `include_history` (true): earlier turns go into the namespace, so a
//!   follow-up ("and in French?") only matches the same conversation. With
//!   false only system prompts do, and follow-ups match across conversations.
//! - `allow_tools` (false): requests that offer tools or carry tool calls or
//!   tool results are skipped unless this is true; their answers depend on
//!   tool state the prompt text does not show.
//! - `max_text_chars` (4096): longer prompts are skipped. A long prompt is
//!   usually a document to work on, where a near-identical document with
//!   different details needs a different answer.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use sluice_plugin_common::config::{ConfigError, PluginConfig};
use sluice_plugin_common::push_json_str;
use sluice_plugin_common::types::{Message, Request, Route};

use crate::exports::sluice::policy::semantic::{Candidate, Probe};

/// The semantic plugin's config; see the module docs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub threshold: f32,
    pub guards: bool,
    pub include_history: bool,
    pub allow_tools: bool,
    pub max_text_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            threshold: 0.92,
            guards: true,
            include_history: true,
            allow_tools: false,
            max_text_chars: 4096,
        }
    }
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(ConfigError::field(
                "threshold",
                format!("must be in (0, 1], got {}", self.threshold),
            ));
        }
        if self.max_text_chars == 0 {
            return Err(ConfigError::field("max_text_chars", "must be at least 1"));
        }
        Ok(())
    }
}

/// Body parameters that change the form of the answer: requests differing in
/// them never share a namespace.
const SHAPING_PARAMS: &[&str] = &[
    "function_call",
    "functions",
    "logprobs",
    "n",
    "response_format",
    "system",
    "tool_choice",
    "tools",
    "top_logprobs",
];

/// The probe for `req`, or None to skip semantic lookup and storing.
pub fn prepare(config: &Config, req: &Request) -> Option<Probe> {
    if !matches!(req.route, Route::Chat | Route::AnthropicMessages) {
        return None;
    }
    let (last, earlier) = req.messages.split_last()?;
    if last.role != "user" || last.extra_json.is_some() || last.text.trim().is_empty() {
        return None;
    }
    if !config.allow_tools && uses_tools(req) {
        return None;
    }
    if last.text.chars().count() > config.max_text_chars {
        return None;
    }
    Some(Probe {
        text: last.text.clone(),
        namespace: namespace(config, req, earlier),
        threshold: config.threshold,
    })
}

/// Whether the nearest cached prompt may answer `req`.
pub fn accept(config: &Config, req: &Request, candidate: &Candidate) -> bool {
    // A NaN score is below every threshold.
    if candidate.score.is_nan() || candidate.score < config.threshold {
        return false;
    }
    let Some(probe) = prepare(config, req) else {
        return false;
    };
    !config.guards || crate::guards::conflict(&probe.text, &candidate.prompt).is_none()
}

fn uses_tools(req: &Request) -> bool {
    req.messages
        .iter()
        .any(|m| m.has_tool_calls || m.role == "tool")
        || req.params.iter().any(|p| {
            matches!(
                p.name.as_str(),
                "tools" | "functions" | "tool_choice" | "function_call"
            ) && !matches!(p.json.trim(), "null" | "[]")
        })
}

/// A short hash of the context the question is asked in.
fn namespace(config: &Config, req: &Request, earlier: &[Message]) -> String {
    let mut out = String::from("{\"v\":1,\"route\":");
    push_json_str(&mut out, req.route.name());
    out.push_str(",\"model\":");
    push_json_str(&mut out, &req.model);
    out.push_str(",\"context\":[");
    let context = earlier
        .iter()
        .filter(|m| config.include_history || is_system(m));
    for (i, m) in context.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        push_json_str(&mut out, &m.role);
        out.push(',');
        push_json_str(&mut out, &m.text);
        out.push(',');
        match &m.extra_json {
            Some(extra) => push_json_str(&mut out, extra),
            None => out.push_str("null"),
        }
        out.push(']');
    }
    out.push_str("],\"params\":[");
    let mut params: Vec<_> = req
        .params
        .iter()
        .filter(|p| SHAPING_PARAMS.contains(&p.name.as_str()))
        .collect();
    params.sort_by(|a, b| (&a.name, &a.json).cmp(&(&b.name, &b.json)));
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        push_json_str(&mut out, &p.name);
        out.push(',');
        push_json_str(&mut out, &p.json);
        out.push(']');
    }
    out.push_str("]}");
    // 128 bits: short, and no accidental collisions between contexts.
    blake3::hash(out.as_bytes()).to_hex()[..32].to_string()
}

fn is_system(m: &Message) -> bool {
    m.role == "system" || m.role == "developer"
}

/// The numbers a text mentions, normalised: "1,000" = "1000", "2.50" = "2.5",
/// "007" = "7"; a minus sign counts when it does not follow a letter or digit
/// ("-3 °C" is -3, "5-3" and "gpt-4" are 5, 3 and 4).
pub fn numbers(text: &str) -> BTreeSet<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let negative = i > 0 && chars[i - 1] == '-' && (i < 2 || !chars[i - 2].is_alphanumeric());
        let mut int = String::new();
        let mut frac = String::new();
        let mut in_frac = false;
        while i < chars.len() {
            let c = chars[i];
            let next_is_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
            if c.is_ascii_digit() {
                if in_frac {
                    frac.push(c);
                } else {
                    int.push(c);
                }
            } else if c == '.' && !in_frac && next_is_digit {
                in_frac = true;
            } else if c == ',' && !in_frac && is_thousands_group(&chars[i + 1..]) {
                // thousands separator: skip it
            } else {
                break;
            }
            i += 1;
        }
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let mut n = String::new();
        if negative && !(int.is_empty() && frac.is_empty()) {
            n.push('-');
        }
        n.push_str(if int.is_empty() { "0" } else { int });
        if !frac.is_empty() {
            n.push('.');
            n.push_str(frac);
        }
        found.insert(n);
    }
    found
}

/// Whether `rest` (what follows a comma) is exactly three digits and then
/// no further digit: "1,000" is one number, "1,2,3" and "1, 2" are several.
fn is_thousands_group(rest: &[char]) -> bool {
    rest.len() >= 3
        && rest[..3].iter().all(|c| c.is_ascii_digit())
        && !rest.get(3).is_some_and(|c| c.is_ascii_digit())
}

/// Negation words and how often each occurs; every "not" form ("n't",
/// "cannot", "dont") counts as "not", and a split-off prefix ("non-toxic")
/// as "non".
pub fn negations(text: &str) -> BTreeMap<&'static str, usize> {
    let mut found = BTreeMap::new();
    let words = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '\u{2019}'))
        .filter(|w| !w.is_empty());
    for word in words {
        let word = word.to_lowercase().replace('\u{2019}', "'");
        let word = word.trim_matches('\'');
        if let Some(negation) = negation(word) {
            *found.entry(negation).or_insert(0) += 1;
        }
    }
    found
}

fn negation(word: &str) -> Option<&'static str> {
    const WORDS: &[&str] = &[
        "no", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "without",
        "except", "unless", "non",
    ];
    const NOT_WITHOUT_APOSTROPHE: &[&str] = &[
        "cannot", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "cant", "wont",
        "shouldnt", "wouldnt", "couldnt", "havent", "hasnt", "hadnt", "mustnt", "aint",
    ];
    if word == "not" || word.ends_with("n't") || NOT_WITHOUT_APOSTROPHE.contains(&word) {
        return Some("not");
    }
    WORDS.iter().find(|w| **w == word).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_common::parse_config;
    use sluice_plugin_common::testing::{message, param, request};

    fn candidate(prompt: &str, score: f32) -> Candidate {
        Candidate {
            score,
            prompt: prompt.into(),
            age_seconds: 30,
        }
    }

    fn conversation(turns: &[(&str, &str)]) -> Request {
        let mut r = request("");
        r.messages = turns
            .iter()
            .map(|(role, text)| message(role, text))
            .collect();
        r
    }

    #[test]
    fn probe_is_the_last_user_message() {
        let config = Config::default();
        let r = conversation(&[("system", "Be terse."), ("user", "Capital of France?")]);
        let probe = prepare(&config, &r).expect("probe");
        assert_eq!(probe.text, "Capital of France?");
        assert_eq!(probe.threshold, 0.92);
        assert_eq!(probe.namespace.len(), 32);
    }

    #[test]
    fn no_probe_for_embeddings_or_non_user_endings() {
        let config = Config::default();
        let mut r = request("hello");
        r.route = Route::Embeddings;
        assert_eq!(prepare(&config, &r), None, "embeddings");

        let r = conversation(&[("user", "Tell me a joke"), ("assistant", "Why did")]);
        assert_eq!(prepare(&config, &r), None, "assistant prefill");

        let mut r = request("");
        r.messages.clear();
        assert_eq!(prepare(&config, &r), None, "no messages");

        assert_eq!(prepare(&config, &request("   ")), None, "blank");

        let mut r = request("What is in this picture?");
        r.messages[0].extra_json = Some(r#"[{"type":"image_url"}]"#.into());
        assert_eq!(prepare(&config, &r), None, "image");

        let r = request(&"x".repeat(4097));
        assert_eq!(prepare(&config, &r), None, "too long");
    }

    #[test]
    fn tools_skip_unless_allowed() {
        let config = Config::default();
        let mut offers_tools = request("What's the weather in Oslo?");
        offers_tools.params = vec![param("tools", r#"[{"type":"function"}]"#)];
        assert_eq!(prepare(&config, &offers_tools), None);

        let mut tool_turn = conversation(&[
            ("user", "Weather in Oslo?"),
            ("assistant", ""),
            ("tool", "12C"),
            ("user", "And tomorrow?"),
        ]);
        tool_turn.messages[1].has_tool_calls = true;
        assert_eq!(prepare(&config, &tool_turn), None);

        let mut empty_tools = request("hi there");
        empty_tools.params = vec![param("tools", "[]")];
        assert!(prepare(&config, &empty_tools).is_some());

        let allow: Config = parse_config(r#"{"allow_tools": true}"#).unwrap();
        assert!(prepare(&allow, &offers_tools).is_some());
        assert!(prepare(&allow, &tool_turn).is_some());
    }

    #[test]
    fn namespace_follows_the_context() {
        let config = Config::default();
        let ns = |r: &Request| prepare(&config, r).expect("probe").namespace;
        let base = conversation(&[("system", "You are a pirate."), ("user", "Hello?")]);

        let same = base.clone();
        assert_eq!(ns(&same), ns(&base));

        let mut other_model = base.clone();
        other_model.model = "gpt-4o".into();
        assert_ne!(ns(&other_model), ns(&base), "model");

        let other_system = conversation(&[("system", "You are a poet."), ("user", "Hello?")]);
        assert_ne!(ns(&other_system), ns(&base), "system prompt");

        // The question itself is not part of the namespace.
        let other_question = conversation(&[("system", "You are a pirate."), ("user", "Hi?")]);
        assert_eq!(ns(&other_question), ns(&base), "question");

        let mut json_mode = base.clone();
        json_mode.params = vec![param("response_format", r#"{"type":"json_object"}"#)];
        assert_ne!(ns(&json_mode), ns(&base), "response_format");

        let mut sampled = base.clone();
        sampled.params = vec![param("top_p", "0.5"), param("user", r#""bob""#)];
        assert_eq!(ns(&sampled), ns(&base), "sampling params");
    }

    #[test]
    fn history_matters_unless_disabled() {
        let a = conversation(&[
            ("user", "Translate 'cat' to German"),
            ("assistant", "Katze"),
            ("user", "And to French?"),
        ]);
        let b = conversation(&[
            ("user", "Translate 'dog' to German"),
            ("assistant", "Hund"),
            ("user", "And to French?"),
        ]);
        let config = Config::default();
        let ns = |c: &Config, r: &Request| prepare(c, r).expect("probe").namespace;
        assert_ne!(ns(&config, &a), ns(&config, &b));

        let no_history: Config = parse_config(r#"{"include_history": false}"#).unwrap();
        assert_eq!(ns(&no_history, &a), ns(&no_history, &b));
    }

    #[test]
    fn accepts_close_paraphrases() {
        let config = Config::default();
        let r = request("What is the capital of France?");
        assert!(accept(
            &config,
            &r,
            &candidate("what's the capital city of France", 0.95)
        ));
        assert!(accept(
            &config,
            &r,
            &candidate("What is the capital of France?", 0.92)
        ));
    }

    #[test]
    fn rejects_below_threshold() {
        let config = Config::default();
        let r = request("What is the capital of France?");
        assert!(!accept(
            &config,
            &r,
            &candidate("What is the capital of Spain?", 0.91)
        ));
        assert!(!accept(&config, &r, &candidate("x", f32::NAN)));

        let loose: Config = parse_config(r#"{"threshold": 0.8}"#).unwrap();
        assert!(accept(
            &loose,
            &r,
            &candidate("what is the capital city of France", 0.85)
        ));
        assert!(!accept(
            &config,
            &r,
            &candidate("what is the capital city of France", 0.85)
        ));
    }

    #[test]
    fn rejects_different_numbers() {
        let config = Config::default();
        let r = request("Convert 5 km to miles");
        assert!(!accept(
            &config,
            &r,
            &candidate("Convert 50 km to miles", 0.99)
        ));
        assert!(!accept(
            &config,
            &r,
            &candidate("Convert km to miles", 0.99)
        ));
        assert!(!accept(
            &config,
            &r,
            &candidate("Convert -5 km to miles", 0.99)
        ));
        assert!(accept(
            &config,
            &r,
            &candidate("convert 5 kilometres to miles", 0.97)
        ));

        let r = request("Is 1,000 more than 999.50?");
        assert!(accept(
            &config,
            &r,
            &candidate("is 1000 more than 999.5", 0.97)
        ));
    }

    #[test]
    fn rejects_different_negations() {
        let config = Config::default();
        let r = request("Name a language that is not statically typed");
        assert!(!accept(
            &config,
            &r,
            &candidate("Name a language that is statically typed", 0.98)
        ));
        assert!(accept(
            &config,
            &r,
            &candidate("name a language that isn't statically typed", 0.97)
        ));

        let r = request("Recipes without eggs");
        assert!(!accept(&config, &r, &candidate("Recipes with eggs", 0.97)));

        let r = request("I don't want it to never stop");
        assert!(!accept(
            &config,
            &r,
            &candidate("I don't want it to stop", 0.97)
        ));
    }

    /// Near-misses that embed close (issue 19's table and the kinds of the
    /// eval set): each pair is refused at a score of 0.99, and only because
    /// of the guards: with `guards: false` it would be served.
    fn refuses_near_misses(pairs: &[(&str, &str)]) {
        let config = Config::default();
        let unguarded: Config = parse_config(r#"{"guards": false}"#).unwrap();
        for (a, b) in pairs {
            for (x, y) in [(a, b), (b, a)] {
                let r = request(x);
                assert!(!accept(&config, &r, &candidate(y, 0.99)), "{x:?} / {y:?}");
                assert!(accept(&unguarded, &r, &candidate(y, 0.99)), "{x:?} / {y:?}");
            }
        }
    }

    #[test]
    fn rejects_swapped_word_order() {
        refuses_near_misses(&[
            (
                "flights from New York to London",
                "flights from London to New York",
            ),
            ("Subtract 7 from 20", "Subtract 20 from 7"),
            (
                "Is a whale heavier than an elephant?",
                "Is an elephant heavier than a whale?",
            ),
            (
                "Why did Brutus betray Caesar?",
                "Why did Caesar betray Brutus?",
            ),
            ("Does a dog chase a cat?", "Does a cat chase a dog?"),
        ]);
    }

    #[test]
    fn rejects_swapped_unit_direction() {
        refuses_near_misses(&[
            (
                "Convert 5 miles to kilometers",
                "Convert 5 kilometers to miles",
            ),
            (
                "How many ounces are in 3 pounds?",
                "How many pounds are in 3 ounces?",
            ),
            (
                "Convert 30 degrees Celsius to Fahrenheit",
                "Convert 30 °F to Celsius",
            ),
            ("Convert 100 USD to EUR", "Convert 100 EUR to USD"),
        ]);
    }

    #[test]
    fn rejects_other_time_words() {
        refuses_near_misses(&[
            (
                "What is the weather in Oslo today?",
                "What is the weather in Oslo tomorrow?",
            ),
            (
                "Top news stories of last year",
                "Top news stories of this year",
            ),
            ("Plan my meals for this week", "Plan my meals for next week"),
            (
                "Average rainfall in London in March",
                "Average rainfall in London in October",
            ),
        ]);
    }

    #[test]
    fn rejects_antonyms() {
        refuses_near_misses(&[
            (
                "What is the fastest land animal?",
                "What is the slowest land animal?",
            ),
            ("How do I enable dark mode?", "How do I disable dark mode?"),
            (
                "How do I turn on Bluetooth?",
                "How do I turn off Bluetooth?",
            ),
            (
                "Sort the list in ascending order",
                "Sort the list in descending order",
            ),
            (
                "What are the advantages of remote work?",
                "What are the drawbacks of remote work?",
            ),
        ]);
    }

    #[test]
    fn rejects_negation_by_prefix_or_verb() {
        refuses_near_misses(&[
            (
                "Is it legal to drive barefoot?",
                "Is it illegal to drive barefoot?",
            ),
            ("Why do people like jazz?", "Why do people dislike jazz?"),
            (
                "Which mushrooms are edible?",
                "Which mushrooms are inedible?",
            ),
            (
                "What foods should I eat when pregnant?",
                "What foods should I avoid when pregnant?",
            ),
            (
                "What makes a harmful habit?",
                "What makes a harmless habit?",
            ),
            (
                "Which metals are magnetic?",
                "Which metals are non-magnetic?",
            ),
        ]);
    }

    #[test]
    fn rejects_other_numbers_in_words_or_digits() {
        refuses_near_misses(&[
            (
                "Give me three reasons to learn French",
                "Give me five reasons to learn French",
            ),
            (
                "Give me three reasons to learn French",
                "Give me 5 reasons to learn French",
            ),
            (
                "Who was the first president of Kenya?",
                "Who was the second president of Kenya?",
            ),
            ("What is 5 + 3?", "What is 5 - 3?"),
        ]);
        let config = Config::default();
        let r = request("Give me three reasons to learn French");
        assert!(accept(
            &config,
            &r,
            &candidate("give me 3 reasons to learn French", 0.97)
        ));
    }

    #[test]
    fn rejects_other_entities_tasks_and_personas() {
        refuses_near_misses(&[
            (
                "What is the population of Canada?",
                "What is the population of Australia?",
            ),
            (
                "How do I reverse a list in python?",
                "How do I reverse a list in javascript?",
            ),
            (
                "Translate 'thank you' into French",
                "Translate 'thank you' into Japanese",
            ),
            (
                "Translate 'good night' into Italian",
                "Translate 'good morning' into Italian",
            ),
            (
                "Write a poem about the ocean",
                "Write a short story about the ocean",
            ),
            (
                "Write a Python function to reverse a string",
                "Write a Python function to reverse a list",
            ),
            (
                "Explain inflation to a child",
                "Explain inflation to an economist",
            ),
            (
                "I am the landlord: what are my rights?",
                "I am the tenant: what are my rights?",
            ),
        ]);
    }

    #[test]
    fn rejects_other_units_comparatives_and_scope() {
        refuses_near_misses(&[
            ("Convert 5 km to miles", "Convert 5 km to meters"),
            (
                "Height of Mount Everest in feet",
                "Height of Mount Everest in meters",
            ),
            (
                "Is a cheetah faster than a lion?",
                "Is a cheetah slower than a lion?",
            ),
            (
                "Countries with more than 100 million people",
                "Countries with fewer than 100 million people",
            ),
            (
                "What is the most expensive spice?",
                "What is the least expensive spice?",
            ),
            (
                "Are all mushrooms poisonous?",
                "Are some mushrooms poisonous?",
            ),
            (
                "Should I always use HTTPS?",
                "Should I sometimes use HTTPS?",
            ),
            (
                "Is tea healthier than coffee?",
                "Is tea less healthy than coffee?",
            ),
            (
                "Name a metal denser than lead",
                "Name a metal less dense than lead",
            ),
        ]);
        let config = Config::default();
        let r = request("Which spice is cheaper, saffron or vanilla?");
        let same = candidate("Which spice is less expensive, saffron or vanilla?", 0.97);
        assert!(accept(&config, &r, &same));
    }

    #[test]
    fn rejects_a_repeated_word_in_another_place() {
        refuses_near_misses(&[(
            "Which is older, Rome or Athens, and why is Rome famous?",
            "Which is older, Rome or Athens, and why is Athens famous?",
        )]);
    }

    #[test]
    fn rejects_other_tasks_on_the_same_subject() {
        refuses_near_misses(&[
            (
                "Explain the nitrogen cycle",
                "Draw a diagram of the nitrogen cycle",
            ),
            (
                "Debug this JavaScript function",
                "Document this JavaScript function",
            ),
        ]);
        let config = Config::default();
        let r = request("What is the nitrogen cycle?");
        let same = candidate("Explain the nitrogen cycle.", 0.95);
        assert!(accept(&config, &r, &same));
    }

    #[test]
    fn rejects_when_the_request_is_not_eligible() {
        let config = Config::default();
        let mut r = request("What is the capital of France?");
        r.route = Route::Embeddings;
        assert!(!accept(
            &config,
            &r,
            &candidate("What is the capital of France?", 1.0)
        ));
    }

    #[test]
    fn number_extraction() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(numbers("no digits"), set(&[]));
        assert_eq!(
            numbers("1,000,000 and 2.50 and 007"),
            set(&["1000000", "2.5", "7"])
        );
        assert_eq!(numbers("1,2,3"), set(&["1", "2", "3"]));
        assert_eq!(numbers("-3 °C, 5-3, gpt-4"), set(&["-3", "5", "3", "4"]));
        assert_eq!(numbers("version 1.2.3."), set(&["1.2", "3"]));
        assert_eq!(numbers("0.0 and -0"), set(&["0"]));
    }

    #[test]
    fn negation_counting() {
        let n = negations("No, I can't; I cannot and won’t. Nothing except NOT this.");
        assert_eq!(n.get("not"), Some(&4));
        assert_eq!(n.get("no"), Some(&1));
        assert_eq!(n.get("nothing"), Some(&1));
        assert_eq!(n.get("except"), Some(&1));
        assert!(negations("Knots and notes, nobel nonce").is_empty());
    }

    #[test]
    fn bad_config_names_the_field() {
        for (json, field) in [
            (r#"{"threshold": 0}"#, "`threshold`"),
            (r#"{"threshold": 1.5}"#, "`threshold`"),
            (r#"{"threshold": "high"}"#, "`threshold`"),
            (r#"{"max_text_chars": 0}"#, "`max_text_chars`"),
            (r#"{"include_history": 1}"#, "`include_history`"),
            (r#"{"allow_tool": true}"#, "unknown field `allow_tool`"),
        ] {
            let e = parse_config::<Config>(json).unwrap_err().to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
    }
}
