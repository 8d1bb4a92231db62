//! [`Answer`]: a completed upstream answer as the caches keep it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::mem::size_of;

use bytes::Bytes;

use super::footprint;
use crate::policy::{Route, TokenCount};

/// The body of a cached answer, in the form it was produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerBody {
    /// A complete JSON response body.
    Json(Bytes),
    /// A server-sent-event stream, exactly as its events went to the client.
    Stream(Bytes),
}

/// A completed answer: what a cache hit replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub route: Route,
    pub body: AnswerBody,
    /// Tokens the original call used.
    pub usage: TokenCount,
    /// Unix milliseconds when it was produced.
    pub stored_at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const MAGIC: &[u8; 4] = b"SLA1";

impl Answer {
    /// A JSON answer produced now. The body is copied into an allocation of
    /// its own: a body received from the network is often a slice of a much
    /// larger read buffer, which a cached slice would keep alive.
    pub fn json(route: Route, body: Bytes, usage: TokenCount) -> Self {
        Self {
            route,
            body: AnswerBody::Json(Bytes::copy_from_slice(&body)),
            usage,
            stored_at_ms: now_ms(),
        }
    }

    /// A streamed answer produced now (copied like [`Answer::json`]'s: a
    /// recording buffer has spare capacity).
    pub fn stream(route: Route, events: Bytes, usage: TokenCount) -> Self {
        Self {
            route,
            body: AnswerBody::Stream(Bytes::copy_from_slice(&events)),
            usage,
            stored_at_ms: now_ms(),
        }
    }

    /// The body bytes, whichever form.
    pub fn body_bytes(&self) -> &Bytes {
        match &self.body {
            AnswerBody::Json(b) | AnswerBody::Stream(b) => b,
        }
    }

    /// Length of the body, what `[cache] max_entry_bytes` bounds.
    pub fn size(&self) -> usize {
        self.body_bytes().len()
    }

    /// Memory an `Arc<Answer>` holds: the `Arc` with the answer, the body
    /// (its own allocation, see [`Answer::json`]) and the header `Bytes`
    /// allocates once the body is shared with a response.
    pub fn retained_bytes(&self) -> usize {
        footprint::alloc_size(2 * size_of::<usize>() + size_of::<Answer>())
            + footprint::alloc_size(self.size())
            + footprint::alloc_size(3 * size_of::<usize>())
    }

    /// Seconds since it was produced.
    pub fn age_seconds(&self) -> u32 {
        (now_ms().saturating_sub(self.stored_at_ms) / 1000) as u32
    }

    /// Binary form for the shared tier, carrying its expiry so another node
    /// can keep it locally no longer than its TTL.
    pub fn encode(&self, ttl: Duration) -> Vec<u8> {
        let body = self.body_bytes();
        let mut out = Vec::with_capacity(body.len() + 34);
        out.extend_from_slice(MAGIC);
        out.push(match self.route {
            Route::Chat => 0,
            Route::Embeddings => 1,
            Route::AnthropicMessages => 2,
        });
        out.push(match self.body {
            AnswerBody::Json(_) => 0,
            AnswerBody::Stream(_) => 1,
        });
        out.extend_from_slice(&self.usage.prompt.to_le_bytes());
        out.extend_from_slice(&self.usage.completion.to_le_bytes());
        out.extend_from_slice(&self.stored_at_ms.to_le_bytes());
        let expires = now_ms().saturating_add(ttl.as_millis() as u64);
        out.extend_from_slice(&expires.to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Parses [`Answer::encode`]'s output; also returns the time left to live
    /// (None when already expired). Garbage yields None, never a panic.
    pub fn decode(bytes: &[u8]) -> Option<(Answer, Option<Duration>)> {
        let rest = bytes.strip_prefix(MAGIC)?;
        if rest.len() < 26 {
            return None;
        }
        let route = match rest[0] {
            0 => Route::Chat,
            1 => Route::Embeddings,
            2 => Route::AnthropicMessages,
            _ => return None,
        };
        let u32_at = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(rest[i..i + 8].try_into().unwrap_or_default());
        let usage = TokenCount::new(u32_at(2), u32_at(6));
        let stored_at_ms = u64_at(10);
        let expires = u64_at(18);
        let body = Bytes::copy_from_slice(&rest[26..]);
        let body = match rest[1] {
            0 => AnswerBody::Json(body),
            1 => AnswerBody::Stream(body),
            _ => return None,
        };
        let left = expires.checked_sub(now_ms()).filter(|ms| *ms > 0);
        Some((
            Answer {
                route,
                body,
                usage,
                stored_at_ms,
            },
            left.map(Duration::from_millis),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips_and_garbage_is_rejected() {
        let a = Answer::stream(
            Route::AnthropicMessages,
            Bytes::from_static(b"data: x\n\n"),
            TokenCount::new(7, 9),
        );
        let (b, left) = Answer::decode(&a.encode(Duration::from_secs(30))).expect("decodes");
        assert_eq!(a, b);
        assert!(left.expect("not expired") <= Duration::from_secs(30));
        assert!(Answer::decode(b"SLA1").is_none());
        assert!(Answer::decode(b"nonsense at all, really").is_none());
        let mut bad = a.encode(Duration::from_secs(1));
        bad[4] = 9;
        assert!(Answer::decode(&bad).is_none());
    }
}
