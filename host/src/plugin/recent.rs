//! The last few real requests each slot's plugin answered, credentials
//! stripped: with built-in samples, what a new version is verified against
//! before it serves (see `crate::versions`). Recording is sampled (at most
//! one request a slot per [`EVERY`]) so the request path pays one atomic
//! load almost always.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::policy::{PolicyRequest, Slot, SlotMap};

/// Requests kept per slot.
pub const RECENT_PER_SLOT: usize = 4;
/// Requests larger than this (messages, params and headers, in bytes) are
/// not recorded: four per slot of the largest bodies a gateway takes
/// would otherwise keep tens of MiB alive.
const MAX_RECORDED_BYTES: usize = 64 << 10;
/// At most one request a slot is recorded this often.
const EVERY: Duration = Duration::from_secs(1);
/// Ids of requests that must not be recorded (verification samples).
pub const SAMPLE_ID_PREFIX: &str = "sluice-sample:";

/// Header names (lower-case) that look like credentials and are dropped
/// on top of what the pipeline already removes.
const SECRET_HINTS: &[&str] = &["auth", "key", "token", "cookie", "secret", "session"];

/// The recent requests of every slot.
pub(crate) struct RecentRequests {
    started: Instant,
    /// When each slot last recorded, in ms since `started` (+1; 0: never).
    last_ms: SlotMap<AtomicU64>,
    rings: SlotMap<Mutex<VecDeque<PolicyRequest>>>,
}

impl Default for RecentRequests {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_ms: SlotMap::default(),
            rings: SlotMap::default(),
        }
    }
}

impl RecentRequests {
    /// Records `req` for `slot` unless one was recorded within [`EVERY`].
    pub(crate) fn offer(&self, slot: Slot, req: &PolicyRequest) {
        if req.id.starts_with(SAMPLE_ID_PREFIX) || size_of_request(req) > MAX_RECORDED_BYTES {
            return;
        }
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms[slot].load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < EVERY.as_millis() as u64 {
            return;
        }
        if self.last_ms[slot]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let mut req = req.clone();
        req.headers
            .retain(|(name, _)| !SECRET_HINTS.iter().any(|h| name.contains(h)));
        let mut ring = self.rings[slot].lock();
        if ring.len() == RECENT_PER_SLOT {
            ring.pop_front();
        }
        ring.push_back(req);
    }

    /// The recorded requests of `slot`, oldest first.
    pub(crate) fn of(&self, slot: Slot) -> Vec<PolicyRequest> {
        self.rings[slot].lock().iter().cloned().collect()
    }
}

/// About the bytes a copy of `req` holds: its texts.
fn size_of_request(req: &PolicyRequest) -> usize {
    let messages: usize = req
        .messages
        .iter()
        .map(|m| m.text.len() + m.extra_json.as_ref().map_or(0, String::len))
        .sum();
    let params: usize = req.params.iter().map(|p| p.name.len() + p.json.len()).sum();
    let headers: usize = req.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    messages + params + headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_at_most_one_a_second_without_credentials() {
        let recent = RecentRequests::default();
        let req = PolicyRequest {
            id: "r1".into(),
            headers: vec![
                ("x-api-key".into(), "sk-secret".into()),
                ("user-agent".into(), "curl".into()),
            ],
            ..Default::default()
        };
        recent.offer(Slot::Throttle, &req);
        recent.offer(Slot::Throttle, &req);
        let kept = recent.of(Slot::Throttle);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].headers, vec![("user-agent".into(), "curl".into())]);
        let sample = PolicyRequest {
            id: format!("{SAMPLE_ID_PREFIX}x"),
            ..Default::default()
        };
        recent.offer(Slot::Retry, &sample);
        assert!(recent.of(Slot::Retry).is_empty());
        // A request larger than the cap is not kept.
        let mut big = req.clone();
        big.id = "big".into();
        big.messages = vec![crate::policy::Message {
            role: "user".into(),
            text: "x".repeat(MAX_RECORDED_BYTES + 1),
            has_tool_calls: false,
            extra_json: None,
        }];
        recent.offer(Slot::CacheKey, &big);
        assert!(recent.of(Slot::CacheKey).is_empty());
    }
}
