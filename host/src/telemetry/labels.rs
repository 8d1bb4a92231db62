//! Label values: small fixed enums, so every metric has a bounded number of
//! series whatever clients send.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use crate::policy::Route;
use crate::policy::Slot;

macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vmeta])* $variant, )+ }

        impl $name {
            /// Every value, in declaration order (its index order).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }

            /// The value whose label is `label`.
            pub fn parse(label: &str) -> Option<$name> {
                match label { $($label => Some($name::$variant),)+ _ => None }
            }

            #[allow(dead_code, reason = "not every label enum indexes a table")]
            pub(super) fn index(self) -> usize {
                self as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}

label_enum! {
    /// The HTTP surface a request came in on (`route` label).
    pub enum ApiRoute {
        ChatCompletions => "/v1/chat/completions",
        Embeddings => "/v1/embeddings",
        Messages => "/v1/messages",
        Jobs => "/v1/jobs",
        Admin => "/admin",
        /// Anything else (unknown paths, health checks if counted).
        Other => "other",
    }
}

impl From<Route> for ApiRoute {
    fn from(route: Route) -> Self {
        match route {
            Route::Chat => ApiRoute::ChatCompletions,
            Route::Embeddings => ApiRoute::Embeddings,
            Route::AnthropicMessages => ApiRoute::Messages,
        }
    }
}

label_enum! {
    /// How the cache answered (`outcome` label; also the `x-sluice-cache`
    /// header value).
    pub enum CacheOutcome {
        Hit => "hit",
        SemanticHit => "semantic-hit",
        Miss => "miss",
        Bypass => "bypass",
    }
}

label_enum! {
    /// How one upstream attempt ended (`outcome` label).
    pub enum UpstreamOutcome {
        /// A 2xx/3xx answer.
        Ok => "ok",
        /// 429 from the upstream.
        RateLimited => "rate_limited",
        /// Any other 4xx.
        ClientError => "client_error",
        /// 5xx (529 "overloaded" included).
        ServerError => "server_error",
        Timeout => "timeout",
        ConnectError => "connect_error",
    }
}

impl UpstreamOutcome {
    /// The outcome of an answer with HTTP status `code`.
    pub fn from_status(code: u16) -> Self {
        match code {
            429 => UpstreamOutcome::RateLimited,
            400..=499 => UpstreamOutcome::ClientError,
            500..=599 => UpstreamOutcome::ServerError,
            _ => UpstreamOutcome::Ok,
        }
    }
}

label_enum! {
    /// Where a provider's circuit breaker stands (`to` label of
    /// `circuit_transitions_total`; the value of `circuit_state` is its
    /// index: 0 closed, 1 open, 2 half-open). The breaker itself is
    /// `upstream::breaker`, which re-exports this type.
    pub enum CircuitState {
        /// Traffic flows.
        Closed => "closed",
        /// Attempts are refused without touching the network.
        Open => "open",
        /// The cooldown is over: a few probe attempts decide.
        HalfOpen => "half-open",
    }
}

label_enum! {
    /// How a plugin call ended (`result` label). The strings match
    /// `CallError::label` in the plugin runtime.
    pub enum PluginCallResult {
        Ok => "ok",
        Trap => "trap",
        Timeout => "timeout",
        Oom => "oom",
        Error => "error",
    }
}

label_enum! {
    /// Which token count (`kind` label of `tokens_total`).
    pub enum TokenKind {
        Prompt => "prompt",
        Completion => "completion",
    }
}

/// `origin` label values: who caused a failed request.
impl EncodeLabelValue for crate::error::Origin {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// `slot` label values are the config slot names (`cache_key`, …).
impl EncodeLabelValue for Slot {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.name(), encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_indexes_are_dense() {
        for (i, r) in PluginCallResult::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(PluginCallResult::parse(r.as_str()), Some(*r));
        }
        assert_eq!(
            CacheOutcome::parse("semantic-hit"),
            Some(CacheOutcome::SemanticHit)
        );
        assert_eq!(
            UpstreamOutcome::from_status(429),
            UpstreamOutcome::RateLimited
        );
        assert_eq!(
            UpstreamOutcome::from_status(529),
            UpstreamOutcome::ServerError
        );
        assert_eq!(
            UpstreamOutcome::from_status(404),
            UpstreamOutcome::ClientError
        );
        assert_eq!(
            ApiRoute::from(Route::AnthropicMessages).as_str(),
            "/v1/messages"
        );
    }
}

label_enum! {
    /// How a run-time virtual key's authentication ended (`outcome` label
    /// of `virtual_key_auth_total`).
    pub enum KeyAuthOutcome {
        /// The secret opened a live key.
        Ok => "ok",
        /// It opened no key (then config keys and anonymous rules apply).
        Unknown => "unknown",
        /// Revoked, expired, or a rotated-out secret past its grace: 401.
        Refused => "refused",
        /// The state could not be asked: 503.
        Error => "error",
    }
}
