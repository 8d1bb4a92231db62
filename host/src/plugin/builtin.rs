//! The reference plugins compiled into the binary: the components that
//! host/build.rs builds from plugins/ (slots `cache_key`, `semantic`,
//! `throttle`, `retry`, `route`), used when a slot's `source` is `"builtin"`.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

use crate::policy::Slot;

/// The embedded reference component for `slot`, if there is one.
pub fn builtin(slot: Slot) -> Option<&'static [u8]> {
    BUILTIN_PLUGINS
        .iter()
        .find(|(name, _)| *name == slot.name())
        .map(|(_, bytes)| *bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The preamble of a component (not a core module): magic, then
    /// version 0x0d and layer 1.
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn every_slot_has_an_embedded_component() {
        for slot in Slot::ALL {
            let bytes = builtin(slot).unwrap_or_else(|| panic!("no builtin for {slot}"));
            assert!(
                bytes.starts_with(&COMPONENT_HEADER),
                "{slot} is not a component"
            );
        }
        assert!(!BUILTIN_PLUGINS.iter().any(|(name, _)| *name == "hostile"));
    }

    #[test]
    fn test_fixtures_are_built_but_not_embedded() {
        let dir = std::path::Path::new(env!("SLUICE_TEST_PLUGINS_DIR"));
        let hostile =
            std::fs::read(dir.join("sluice_plugin_hostile.wasm")).expect("hostile fixture");
        assert!(hostile.starts_with(&COMPONENT_HEADER));
        assert!(
            BUILTIN_PLUGINS
                .iter()
                .all(|(_, bytes)| *bytes != hostile.as_slice())
        );
    }
}
