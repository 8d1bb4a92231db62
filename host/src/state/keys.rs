//! Key layout, shared by both backends (the memory backend uses the same
//! strings, so both see the same key space).
//!
//! - KV entry:  `sluice:kv:{<ns>/<key>}` — tagged per namespace + key, so KV
//!   traffic spreads over every cluster slot.
//! - Bucket:    `sluice:rl:{<ns>}<key>` — tagged per namespace, so every bucket
//!   of a namespace lives in one cluster slot. That is what lets one script
//!   charge any set of a namespace's buckets atomically, and a bucket key maps
//!   to the same Redis key whichever other buckets it is charged with. The
//!   cost: one namespace's rate-limit traffic goes to one Redis node (a single
//!   small script per charge; a node runs well over 50k of those a second).
//!
//! Inside the braces `%`, `{`, `}` and `/` are percent-escaped, so the hash tag
//! is always exactly what is written between the braces, and the first `/`
//! separates namespace from key: distinct (namespace, key) pairs never map to
//! the same Redis key.

use std::fmt::Write;

/// Appends `s` with `%`, `{`, `}` and `/` percent-escaped.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' | '{' | '}' | '/' => {
                let _ = write!(out, "%{:02X}", c as u32);
            }
            _ => out.push(c),
        }
    }
}

/// The Redis key of `key` in namespace `ns`.
pub(crate) fn kv_key(ns: &str, key: &str) -> String {
    let mut out = String::with_capacity(14 + ns.len() + key.len());
    out.push_str("sluice:kv:{");
    push_escaped(&mut out, ns);
    out.push('/');
    push_escaped(&mut out, key);
    out.push('}');
    out
}

/// The key of the lock guarding the filling of the entry whose key is
/// `entry` (a [`kv_key`]): beside the entry, outside its braces, so it shares the entry's hash tag (one
/// cluster slot) and no `kv_key` can ever equal it (those end in `}`).
pub(crate) fn lock_key(entry: &str) -> String {
    format!("{entry}#lock")
}

/// The Redis key of rate-limit bucket `key` in namespace `ns`.
pub(crate) fn bucket_key(ns: &str, key: &str) -> String {
    let mut out = String::with_capacity(13 + ns.len() + key.len());
    out.push_str("sluice:rl:{");
    push_escaped(&mut out, ns);
    out.push('}');
    // After the tag: only the first `{…}` of a key counts for the slot.
    out.push_str(key);
    out
}

/// The hash tag of a Redis key: what Redis Cluster hashes to pick the slot
/// (the memory backend picks its shard from it the same way).
pub(crate) fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_readable() {
        assert_eq!(
            kv_key("plugin:throttle", "user:42"),
            "sluice:kv:{plugin:throttle/user:42}"
        );
        assert_eq!(
            bucket_key("plugin:throttle", "rpm:acme"),
            "sluice:rl:{plugin:throttle}rpm:acme"
        );
    }

    #[test]
    fn namespace_and_key_never_blur() {
        assert_ne!(kv_key("a", "b/c"), kv_key("a/b", "c"));
        assert_ne!(kv_key("a}", "b"), kv_key("a", "}b"));
        assert_ne!(bucket_key("a", "}x"), bucket_key("a}", "x"));
        assert_ne!(kv_key("a%2F", "b"), kv_key("a/", "b"));
    }

    #[test]
    fn braces_in_names_do_not_change_the_tag() {
        let k = kv_key("ns{x}", "k{y}");
        assert_eq!(hash_tag(&k), "ns%7Bx%7D/k%7By%7D");
        // Every bucket of a namespace shares one tag, whatever its key.
        let a = bucket_key("plugin:t{1}", "a");
        let b = bucket_key("plugin:t{1}", "{zzz}b");
        assert_eq!(hash_tag(&a), hash_tag(&b));
    }
}
