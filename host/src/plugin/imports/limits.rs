//! `sluice:policy/limits`: the atomic all-or-nothing bucket charge, in the
//! plugin's namespace (the same buckets `throttle.admit` answers charge).

use wasmtime::component::{HasSelf, Linker};

use super::{check_key, state_error, wit};
use crate::plugin::convert;
use crate::plugin::sandbox::StoreData;
use wit::types::{Bucket, ChargeResult, StateError};

use crate::state::MAX_BUCKETS;

pub(super) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    wit::limits::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

impl wit::limits::Host for StoreData {
    async fn charge(&mut self, buckets: Vec<Bucket>) -> Result<ChargeResult, StateError> {
        if buckets.len() > MAX_BUCKETS {
            return Err(StateError::Invalid(format!(
                "at most {MAX_BUCKETS} buckets per charge"
            )));
        }
        for bucket in &buckets {
            check_key(&bucket.key)?;
        }
        let buckets = convert::buckets_from_wit(buckets).map_err(StateError::Invalid)?;
        let env = &self.host;
        env.state
            .charge(&env.namespace, &buckets)
            .await
            .map(convert::charge_result_to_wit)
            .map_err(state_error)
    }
}
