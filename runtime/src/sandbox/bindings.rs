//! The one host-side `bindgen!` of the `brokerbox:broker/broker` world.
//!
//! Exports are async because WASI p2 host calls are; imports are async because `kv` reaches
//! the state store.
#![allow(missing_docs)] // generated code; the WIT carries the documentation

wasmtime::component::bindgen!({
    world: "broker",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

pub use self::brokerbox::broker::types;
