//! Canonical JSON: one spelling per value, so equal requests hash equally.
//! [`canonical_json`] writes a parsed [`Value`]; [`canonical_raw`] writes
//! JSON text straight from the parser, without building a `Value` tree, so
//! canonicalizing a large field costs about its own size.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// `value` as canonical JSON: object keys sorted (by their UTF-8 bytes)
/// at every depth, no whitespace, strings escaped as serde_json does, numbers
/// as serde_json prints them (so `1` and `1.0` stay distinct, as the
/// provider sees them).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// Appends the canonical JSON of `value` to `out`.
pub(crate) fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

/// The canonical JSON of the JSON text `json` (one value), the same string
/// [`canonical_json`] gives for it once parsed: keys sorted, a repeated key
/// keeping its last value.
pub fn canonical_raw(json: &str) -> Result<String, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let mut out = String::with_capacity(json.len());
    Canonical(&mut out).deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// An object's canonical JSON from its members, each value already
/// canonical: sorted by key, a repeated key keeping its last value.
pub(crate) fn canonical_object(mut members: Vec<(String, String)>, out: &mut String) {
    // Stable, so of equal keys the last one sent stays last.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    out.push('{');
    let mut first = true;
    for (i, (key, value)) in members.iter().enumerate() {
        if members.get(i + 1).is_some_and(|next| next.0 == *key) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_string(key, out);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
}

/// Appends the canonical JSON of the next value the parser reads.
struct Canonical<'o>(&'o mut String);

impl<'de> DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push_str("null");
        Ok(())
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.0.push_str(if b { "true" } else { "false" });
        Ok(())
    }

    // Numbers print as a `Value` holding them does.
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.0.push_str(&Number::from(n).to_string());
        Ok(())
    }

    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.0.push_str(&Number::from(n).to_string());
        Ok(())
    }

    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        match Number::from_f64(n) {
            Some(n) => self.0.push_str(&n.to_string()),
            // Not finite: a `Value` holds it as null.
            None => self.0.push_str("null"),
        }
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        write_string(s, self.0);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push('[');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.push(',');
            }
            if seq.next_element_seed(Canonical(self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            first = false;
        }
        self.0.push(']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let mut value = String::new();
            map.next_value_seed(Canonical(&mut value))?;
            members.push((key, value));
        }
        canonical_object(members, self.0);
        Ok(())
    }
}

/// A JSON string literal, escaped exactly like serde_json's compact writer.
fn write_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth_without_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": 1, "a": { "z": [ {"y": 2, "x": 1} ], "c": null } }"#)
                .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"z":[{"x":1,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn key_order_in_the_input_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":{"p":true,"q":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":{"q":"s","p":true},"x":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn strings_escape_like_serde_json() {
        let s = "quote\" back\\ nl\n tab\t cr\r bell\u{7} bs\u{8} ff\u{c} uni é 😀 del\u{7f}";
        let v = json!(s);
        assert_eq!(canonical_json(&v), serde_json::to_string(&v).unwrap());
    }

    #[test]
    fn raw_text_canonicalizes_like_a_parsed_value() {
        for json in [
            r#"{ "b": 1, "a": { "z": [ {"y": 2, "x": 1} ], "c": null } }"#,
            r#"[1.0, 1, 1e3, -0, -7, 18446744073709551615, 1e300, 0.1]"#,
            r#"{"k": "quote\" nl\n \u00e9 \ud83d\ude00 ctl\u0001", "e": [], "o": {}}"#,
            r#"{"dup": 1, "a": true, "dup": [2, false]}"#,
            r#""just a string""#,
            "null",
        ] {
            let parsed: Value = serde_json::from_str(json).unwrap();
            assert_eq!(
                canonical_raw(json).unwrap(),
                canonical_json(&parsed),
                "{json}"
            );
        }
        assert!(canonical_raw("[1,").is_err());
        assert!(canonical_raw("1 2").is_err());
    }

    #[test]
    fn scalars_and_numbers_keep_their_spelling() {
        assert_eq!(canonical_json(&json!(null)), "null");
        assert_eq!(canonical_json(&json!(false)), "false");
        assert_eq!(canonical_json(&json!(0.7)), "0.7");
        assert_eq!(canonical_json(&json!(-3)), "-3");
        let v: Value = serde_json::from_str("[1.0, 1, 1e3]").unwrap();
        assert_eq!(canonical_json(&v), "[1.0,1,1000.0]");
        assert_eq!(canonical_json(&json!([])), "[]");
        assert_eq!(canonical_json(&json!({})), "{}");
    }
}
