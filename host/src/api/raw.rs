//! JSON read in place: a body's top-level fields as byte ranges of the body,
//! an object's members and an array's elements as slices of JSON text, and
//! arrays counted before anything is built from them. Nothing here builds a
//! `serde_json::Value` tree, so what parsing holds stays about the size of
//! the body itself (docs/architecture.md, "Parsing").

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::ApiError;

/// The most members one object may have, at the top level of a body and in
/// a message or content part. The provider APIs use a few dozen; the cap
/// keeps a body of tiny members from costing many times its size.
pub const MAX_MEMBERS: usize = 1024;

/// A JSON object body as the client sent it, with where each top-level
/// field's value lies. A repeated key keeps its first position and its last
/// value, as a parsed `serde_json::Map` does.
#[derive(Debug, Clone, PartialEq)]
pub struct RawBody {
    bytes: Bytes,
    fields: Vec<(String, Range<usize>)>,
    /// Some key was sent more than once (so the bytes are not forwarded as
    /// they are: the provider might read the other copy).
    repeated: bool,
}

impl RawBody {
    /// Checks that `bytes` is one JSON object and finds its fields, without
    /// building any of their values.
    pub fn parse(bytes: Bytes) -> Result<Self, ApiError> {
        let base = bytes.as_ptr() as usize;
        let (fields, repeated) = {
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            let members = de.deserialize_any(MembersVisitor)?;
            de.end()?;
            let Some(members) = members else {
                return Err(ApiError::NotAnObject);
            };
            let members = check_members(members, || "body".into())?;
            let repeated = members.repeated;
            let fields = members
                .list
                .into_iter()
                .map(|(name, value)| {
                    let start = value.get().as_ptr() as usize - base;
                    (name, start..start + value.get().len())
                })
                .collect();
            (fields, repeated)
        };
        Ok(Self {
            bytes,
            fields,
            repeated,
        })
    }

    /// Refuses a body holding anything a strict JSON parser refuses,
    /// wherever it is: a string escaping half a UTF-16 surrogate pair
    /// (`"\ud83d"` alone), a number beyond the range of a double (`1e999`).
    /// The raw values the body is read into are checked by serde_json's
    /// lenient skipping, which lets both through, and the body is forwarded
    /// from them: without this, a value sluice never decodes (an unknown
    /// field, the first copy of a repeated key) would reach the provider as
    /// JSON it may refuse or read otherwise. One more pass over the body,
    /// building nothing (both found by the `request` fuzz target). Run after
    /// the fields are read, so an error in one sluice reads names that field.
    pub fn check_strictly(&self) -> Result<(), ApiError> {
        let mut de = serde_json::Deserializer::from_slice(&self.bytes);
        de.deserialize_any(StrictVisitor)?;
        Ok(())
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The JSON text of the field `name`, if the body has it.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, range)| self.slice(range))
    }

    /// Every field as (name, JSON text), in the order the client sent them.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|(name, range)| (name.as_str(), self.slice(range)))
    }

    /// The body with the fields in `changes` (name, JSON text) replaced in
    /// place, or appended when absent. The client's bytes themselves when
    /// nothing changes and no key repeats.
    pub fn rebuilt(&self, changes: &[(&str, String)]) -> Bytes {
        if changes.is_empty() && !self.repeated {
            return self.bytes.clone();
        }
        let extra: usize = changes.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        let mut out = String::with_capacity(self.bytes.len() + extra);
        out.push('{');
        let mut write = |name: &str, value: &str| {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&super::to_json_string(name));
            out.push(':');
            out.push_str(value);
        };
        for (name, value) in self.fields() {
            match changes.iter().find(|(n, _)| *n == name) {
                Some((_, new)) => write(name, new),
                None => write(name, value),
            }
        }
        for (name, value) in changes {
            if self.text(name).is_none() {
                write(name, value);
            }
        }
        out.push('}');
        Bytes::from(out)
    }

    fn slice(&self, range: &Range<usize>) -> &str {
        // The parser read every byte of the body as UTF-8 JSON text, so this
        // cannot fail; "null" keeps the impossible case harmless.
        std::str::from_utf8(&self.bytes[range.clone()]).unwrap_or("null")
    }
}

/// The JSON type of a value's text (which starts at its first character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// The kind of the JSON value `json`, from its first character.
pub(crate) fn kind(json: &str) -> Kind {
    match json.as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

/// An object's members: each key and its value's JSON text.
pub(crate) type MemberList<'a> = Vec<(String, &'a RawValue)>;

/// The members of the object `json`, repeated keys merged (first position,
/// last value); `None` when `json` is not an object. `at` names the object
/// in the error for more than [`MAX_MEMBERS`].
pub(crate) fn members<'a>(
    json: &'a str,
    at: impl FnOnce() -> String,
) -> Result<Option<MemberList<'a>>, ApiError> {
    if kind(json) != Kind::Object {
        return Ok(None);
    }
    let members = serde_json::Deserializer::from_str(json)
        .deserialize_map(MembersVisitor)?
        .unwrap_or_default();
    Ok(Some(check_members(members, at)?.list))
}

/// The value of `name` among `members`.
pub(crate) fn member<'a>(members: &[(String, &'a RawValue)], name: &str) -> Option<&'a str> {
    members
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.get())
}

/// The elements of an array, read without building them.
#[derive(Default)]
pub(crate) struct Elements<'a> {
    /// The first elements, at most as many as asked for.
    pub items: Vec<&'a RawValue>,
    /// How many elements the array has.
    pub count: usize,
    /// Every element is a number.
    pub all_numbers: bool,
}

/// The elements of the array `json`, keeping at most `keep` of them (the
/// rest are only counted); `None` when `json` is not an array.
pub(crate) fn elements(json: &str, keep: usize) -> Result<Option<Elements<'_>>, ApiError> {
    if kind(json) != Kind::Array {
        return Ok(None);
    }
    let elements =
        serde_json::Deserializer::from_str(json).deserialize_seq(ElementsVisitor { keep })?;
    Ok(Some(elements))
}

/// The string `json` holds, unescaped; `None` when it is not a string.
pub(crate) fn string(json: &str) -> Option<String> {
    if kind(json) != Kind::String {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// From how many members an object's keys are looked up through an index.
const INDEX_FROM: usize = 16;

/// Members as read, before the count check.
#[derive(Default)]
struct Members<'a> {
    list: MemberList<'a>,
    /// Members past [`MAX_MEMBERS`], counted but not kept.
    more: usize,
    repeated: bool,
}

fn check_members<'a>(
    members: Members<'a>,
    at: impl FnOnce() -> String,
) -> Result<Members<'a>, ApiError> {
    if members.more > 0 {
        return Err(ApiError::TooManyMembers {
            at: at(),
            count: members.list.len() + members.more,
            limit: MAX_MEMBERS,
        });
    }
    Ok(members)
}

/// Walks a JSON value decoding every string, key and number (so each is
/// checked as a field read by sluice would be) and keeping nothing.
struct StrictVisitor;

impl<'de> serde::de::DeserializeSeed<'de> for StrictVisitor {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry_seed(StrictVisitor, StrictVisitor)?.is_some() {}
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(StrictVisitor)?.is_some() {}
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads an object's members as raw values; anything else is consumed (so
/// the parser still checks it) and reported as `None`.
struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Option<Members<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members::default();
        // Small objects (nearly all) are searched in place; larger ones
        // through an index, so many members cost no quadratic time.
        let mut index: Option<HashMap<String, usize>> = None;
        while let Some(key) = map.next_key::<String>()? {
            let seen = match &index {
                Some(index) => index.get(&key).copied(),
                None => members.list.iter().position(|(k, _)| *k == key),
            };
            if let Some(at) = seen {
                members.list[at].1 = map.next_value()?;
                members.repeated = true;
            } else if members.list.len() < MAX_MEMBERS {
                if members.list.len() == INDEX_FROM {
                    let keys = members.list.iter().enumerate();
                    index = Some(keys.map(|(i, (k, _))| (k.clone(), i)).collect());
                }
                if let Some(index) = &mut index {
                    index.insert(key.clone(), members.list.len());
                }
                members.list.push((key, map.next_value()?));
            } else {
                map.next_value::<IgnoredAny>()?;
                members.more += 1;
            }
        }
        Ok(Some(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

struct ElementsVisitor {
    keep: usize,
}

impl<'de> Visitor<'de> for ElementsVisitor {
    type Value = Elements<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Elements {
            items: Vec::new(),
            count: 0,
            all_numbers: true,
        };
        while let Some(item) = seq.next_element::<&RawValue>()? {
            out.count += 1;
            out.all_numbers &= kind(item.get()) == Kind::Number;
            if out.items.len() < self.keep {
                out.items.push(item);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> RawBody {
        RawBody::parse(Bytes::copy_from_slice(json.as_bytes())).expect(json)
    }

    #[test]
    fn a_number_beyond_a_double_is_refused_wherever_it_is() {
        for sent in [
            r#"{"model":"m","extra":1e999}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi","x":[-5e400]}]}"#,
        ] {
            let err = RawBody::parse(Bytes::copy_from_slice(sent.as_bytes()))
                .and_then(|b| b.check_strictly())
                .expect_err(sent)
                .to_string();
            assert!(err.contains("out of range"), "{sent}: {err}");
        }
        // Tiny numbers round to zero, as a strict parser reads them.
        let b = body(r#"{"model":"m","extra":5e-999}"#);
        let forwarded: serde_json::Value = serde_json::from_slice(&b.rebuilt(&[])).expect("JSON");
        assert_eq!(forwarded["extra"], 0.0);
    }

    #[test]
    fn half_a_surrogate_pair_is_refused_wherever_it_is() {
        // Found by fuzzing: in a field sluice never decodes, the lone
        // surrogate passed and went upstream as JSON a strict parser refuses.
        for sent in [
            r#"{"model":"m","extra":"\ud83d\r"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"\ud83d","content":"ok"}]}"#,
            r#"{"model":"m","x":["\uDE00"]}"#,
            r#"{"model":"m","\ud83d":1}"#,
        ] {
            let err = RawBody::parse(Bytes::copy_from_slice(sent.as_bytes()))
                .and_then(|b| b.check_strictly())
                .expect_err(sent)
                .to_string();
            assert!(
                err.contains("surrogate") || err.contains("escape"),
                "{sent}: {err}"
            );
        }
        // A whole pair, or an escaped backslash before "ud83d", is fine.
        for sent in [
            r#"{"model":"m","extra":"\ud83d\ude00"}"#,
            r#"{"model":"m","extra":"\\ud83d"}"#,
        ] {
            let b = body(sent);
            let forwarded: serde_json::Value =
                serde_json::from_slice(&b.rebuilt(&[("model", r#""n""#.into())])).expect(sent);
            assert_eq!(forwarded["model"], "n");
        }
    }

    #[test]
    fn fields_are_slices_of_the_body() {
        let b = body(r#" { "model" : "m", "messages":[ {"a":1} ], "n": 2 } "#);
        assert_eq!(b.text("model"), Some(r#""m""#));
        assert_eq!(b.text("messages"), Some(r#"[ {"a":1} ]"#));
        assert_eq!(b.text("absent"), None);
        let names: Vec<&str> = b.fields().map(|(n, _)| n).collect();
        assert_eq!(names, ["model", "messages", "n"]);
    }

    #[test]
    fn unchanged_bodies_are_forwarded_as_sent() {
        let sent = r#"{ "model": "m",  "x": [1, 2] }"#;
        assert_eq!(&body(sent).rebuilt(&[])[..], sent.as_bytes());
        let changed = body(sent).rebuilt(&[("model", r#""n""#.into()), ("y", "true".into())]);
        assert_eq!(&changed[..], br#"{"model":"n","x":[1, 2],"y":true}"#);
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        let b = body(r#"{"model":"a","n":1,"model":"b"}"#);
        assert_eq!(b.text("model"), Some(r#""b""#));
        assert_eq!(&b.rebuilt(&[])[..], br#"{"model":"b","n":1}"#);
    }

    #[test]
    fn non_objects_and_bad_json_are_told_apart() {
        for json in ["[1,2]", "3", "\"s\"", "null", "true"] {
            let e = RawBody::parse(Bytes::from(json)).unwrap_err();
            assert_eq!(e, ApiError::NotAnObject, "{json}");
        }
        for json in ["", "{", "[1,", "{} x", "{\"a\":\u{1}}"] {
            let e = RawBody::parse(Bytes::from(json)).unwrap_err();
            assert!(matches!(e, ApiError::MalformedJson { .. }), "{json}: {e:?}");
        }
        let bad_utf8 = Bytes::from_static(b"{\"a\":\"\xff\"}");
        assert!(matches!(
            RawBody::parse(bad_utf8),
            Err(ApiError::MalformedJson { .. })
        ));
    }

    #[test]
    fn too_many_members_are_refused_by_count() {
        let many: Vec<String> = (0..MAX_MEMBERS + 5)
            .map(|i| format!("\"k{i}\":0"))
            .collect();
        let json = format!("{{{}}}", many.join(","));
        let e = RawBody::parse(Bytes::from(json.clone())).unwrap_err();
        assert_eq!(
            e,
            ApiError::TooManyMembers {
                at: "body".into(),
                count: MAX_MEMBERS + 5,
                limit: MAX_MEMBERS
            }
        );
        assert!(members(&json, || "messages[0]".into()).is_err());
    }

    #[test]
    fn elements_keep_a_prefix_and_count_the_rest() {
        let e = elements("[1, 2, 3, 4]", 2).unwrap().unwrap();
        assert_eq!(e.count, 4);
        assert_eq!(e.items.len(), 2);
        assert_eq!(e.items[1].get(), "2");
        assert!(e.all_numbers);
        let mixed = elements(r#"[1, "a", {"b": [2]}]"#, 10).unwrap().unwrap();
        assert_eq!(mixed.count, 3);
        assert!(!mixed.all_numbers);
        assert_eq!(mixed.items[2].get(), r#"{"b": [2]}"#);
        assert!(elements("{}", 1).unwrap().is_none());
    }

    #[test]
    fn members_and_strings() {
        let m = members(
            r#"{"role":"user","content":"hi","role":"tool"}"#,
            String::new,
        )
        .unwrap()
        .unwrap();
        assert_eq!(member(&m, "role"), Some(r#""tool""#));
        assert_eq!(
            member(&m, "content").and_then(string).as_deref(),
            Some("hi")
        );
        assert!(members("[]", String::new).unwrap().is_none());
        assert_eq!(string(r#""a\nb""#).as_deref(), Some("a\nb"));
        assert_eq!(string("1"), None);
    }
}
