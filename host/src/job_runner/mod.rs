//! Running asynchronous jobs, above the gateway: [`spawn_workers`] starts a
//! node's workers (claiming by priority, running each job through
//! [`crate::pipeline::handle_as`], retries, dead letters, webhooks, graceful
//! shutdown); [`routes`] serves `/v1/jobs/{id}`, accepts `Prefer:
//! respond-async` requests and the admin API's `/admin/jobs/*`;
//! [`batches`] is the OpenAI Batch API over jobs. The
//! records, queues and webhook delivery are in [`crate::jobs`].

pub mod batches;
pub mod routes;
mod worker;

pub use worker::{Workers, spawn_workers};
