//! Counting the Redis round trips one request waits on: the pipeline runs a
//! request's phases inside [`counted`], and every command the Redis backend
//! sends from inside it counts ([`count`]). Work spawned off the request
//! path (storing answers, queued corrections) runs outside and does not.

use std::cell::Cell;
use std::future::Future;

tokio::task_local! {
    static ROUND_TRIPS: Cell<u32>;
}

/// Runs `fut`, returning its output and the Redis round trips it made.
pub async fn counted<T>(fut: impl Future<Output = T>) -> (T, u32) {
    ROUND_TRIPS
        .scope(Cell::new(0), async move {
            let out = fut.await;
            (out, ROUND_TRIPS.with(Cell::get))
        })
        .await
}

/// Counts one round trip, when inside [`counted`].
pub(crate) fn count() {
    let _ = ROUND_TRIPS.try_with(|c| c.set(c.get() + 1));
}
