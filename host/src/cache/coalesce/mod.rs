//! Coalescing: identical cacheable requests in flight make one upstream
//! call. On one node ([`local`]) the first request leads and the others wait
//! for its answer; across nodes ([`shared`]) a node's local leader takes a
//! short lock in the shared state, so one node calls and the others read
//! the answer from the shared cache tier.

pub mod local;
pub mod shared;

pub use local::{Coalescer, Follower, Leader, Role};
pub use shared::{Joined, LOCK_TTL, Lookup, SharedCoalescer, SharedLease};
