//! Host bindings generated from `wit/`. Private to the plugin runtime: the
//! rest of the crate speaks [`crate::policy`] types.
//!
//! Only the imports that may wait on I/O (`state`, `limits`) are async.
//! Exports are called async, on a fiber, so a guest can yield at epoch ticks
//! (see [`super::instance`]).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "gateway",
    imports: {
        "sluice:policy/state": async,
        "sluice:policy/limits": async,
    },
    exports: { default: async },
});
