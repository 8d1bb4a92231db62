//! [`Slot`]: the one name for a policy plugin's place in the request flow,
//! used by config, the plugin runtime, hot reload, fleet releases, the admin
//! API and metrics alike; [`SlotMap`]: one value per slot; and
//! [`FailurePolicy`]: what a request sees when a slot's plugin fails.
//!
//! A slot and the WIT interface a plugin exports for it are the same thing
//! spelled two ways: `cache_key` in config, metrics and URLs, `cache-key` in
//! WIT. Both parse.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A policy slot: one exported WIT interface of `sluice:policy`, and the
/// place in the request flow the plugin exporting it fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    Throttle,
    CacheKey,
    Semantic,
    Retry,
    /// Optional: only consulted when `[plugins.route]` is configured.
    Route,
}

impl Slot {
    /// How many slots there are.
    pub const COUNT: usize = 5;

    /// Every slot, in request-flow order (also [`Self::index`] order).
    pub const ALL: [Slot; Self::COUNT] = [
        Slot::Throttle,
        Slot::CacheKey,
        Slot::Semantic,
        Slot::Retry,
        Slot::Route,
    ];

    /// The config key (`[plugins.<name>]`), metric label and admin URL
    /// segment: `"cache_key"`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Throttle => "throttle",
            Slot::CacheKey => "cache_key",
            Slot::Semantic => "semantic",
            Slot::Retry => "retry",
            Slot::Route => "route",
        }
    }

    /// The WIT interface name without package or version: `"cache-key"`.
    pub fn interface(self) -> &'static str {
        match self {
            Slot::Throttle => "throttle",
            Slot::CacheKey => "cache-key",
            Slot::Semantic => "semantic",
            Slot::Retry => "retry",
            Slot::Route => "route",
        }
    }

    /// The slot named `name`, as a config key or an interface name.
    pub fn parse(name: &str) -> Option<Slot> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name || s.interface() == name)
    }

    /// A dense index (`0..COUNT`, request-flow order) for per-slot arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl AsRef<str> for Slot {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl Serialize for Slot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Slot::parse(&raw).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown slot `{raw}`; expected one of throttle, cache_key, semantic, retry, route"
            ))
        })
    }
}

/// One `T` per slot, indexed by [`Slot`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotMap<T>([T; Slot::COUNT]);

impl<T> SlotMap<T> {
    /// A map whose value for each slot is `f(slot)`.
    pub fn from_fn(mut f: impl FnMut(Slot) -> T) -> Self {
        Self(Slot::ALL.map(&mut f))
    }

    /// Like [`Self::from_fn`], stopping at the first error.
    pub fn try_from_fn<E>(mut f: impl FnMut(Slot) -> Result<T, E>) -> Result<Self, E> {
        let mut values = Vec::with_capacity(Slot::COUNT);
        for slot in Slot::ALL {
            values.push(f(slot)?);
        }
        Ok(Self(values.try_into().unwrap_or_else(|_| {
            unreachable!("exactly one value per slot")
        })))
    }

    /// Each slot with its value, in request-flow order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &T)> {
        Slot::ALL.into_iter().zip(self.0.iter())
    }
}

impl<T> std::ops::Index<Slot> for SlotMap<T> {
    type Output = T;
    fn index(&self, slot: Slot) -> &T {
        &self.0[slot.index()]
    }
}

impl<T> std::ops::IndexMut<Slot> for SlotMap<T> {
    fn index_mut(&mut self, slot: Slot) -> &mut T {
        &mut self.0[slot.index()]
    }
}

/// What a request sees when a plugin call traps, times out or runs out of
/// memory. Every slot defaults to fail-open (serve as if the plugin were not
/// there: no throttling, no caching, no semantic lookup, no retry, the
/// host's own provider order); a
/// deployment where an unthrottled request is worse than a refused one sets
/// `failure = "fail-closed"` on its throttle slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Go on as if the plugin had no opinion.
    #[default]
    FailOpen,
    /// Answer 503.
    FailClosed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_interfaces_parse_and_index_in_flow_order() {
        for (i, slot) in Slot::ALL.into_iter().enumerate() {
            assert_eq!(slot.index(), i);
            assert_eq!(Slot::parse(slot.name()), Some(slot));
            assert_eq!(Slot::parse(slot.interface()), Some(slot));
        }
        assert_eq!(Slot::parse("cache-key"), Some(Slot::CacheKey));
        assert_eq!(Slot::parse("cache_key"), Some(Slot::CacheKey));
        assert_eq!(Slot::parse("route"), Some(Slot::Route));
        assert_eq!(Slot::parse("routing"), None);
        let map = SlotMap::from_fn(|s| s.name());
        assert_eq!(map[Slot::Semantic], "semantic");
        assert_eq!(map.iter().count(), Slot::COUNT);
    }
}
