//! `sluice:policy/state`: key-value state confined to the plugin's namespace.
//!
//! The namespace is fixed by the host when the plugin is loaded; keys are
//! opaque strings inside it, so no key a plugin writes can name another
//! plugin's entry.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use super::{MAX_VALUE_BYTES, check_key, state_error, wit};
use crate::plugin::sandbox::StoreData;
use wit::types::StateError;

pub(super) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    wit::state::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

fn check_value(value: &[u8]) -> Result<(), StateError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StateError::Invalid(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

impl wit::state::Host for StoreData {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, StateError> {
        check_key(&key)?;
        let env = &self.host;
        env.state
            .get(&env.namespace, &key)
            .await
            .map_err(state_error)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), StateError> {
        check_key(&key)?;
        check_value(&value)?;
        let env = &self.host;
        env.state
            .set(&env.namespace, &key, &value, ttl(ttl_ms))
            .await
            .map_err(state_error)
    }

    async fn delete(&mut self, key: String) -> Result<bool, StateError> {
        check_key(&key)?;
        let env = &self.host;
        env.state
            .delete(&env.namespace, &key)
            .await
            .map_err(state_error)
    }

    async fn incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, StateError> {
        check_key(&key)?;
        let env = &self.host;
        env.state
            .incr(&env.namespace, &key, delta, ttl(ttl_ms))
            .await
            .map_err(state_error)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, StateError> {
        check_key(&key)?;
        check_value(&value)?;
        let env = &self.host;
        env.state
            .compare_and_swap(
                &env.namespace,
                &key,
                expected.as_deref(),
                &value,
                ttl(ttl_ms),
            )
            .await
            .map_err(state_error)
    }
}
