//! Host bindings generated from `wit/`. Private to the plugin runtime: the
//! rest of the crate speaks [`crate::policy`] types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "gateway",
    imports: { default: async },
    exports: { default: async },
});
