//! A Spin-compatible local host on wasmtime. It reads `spin.toml` and runs the app's HTTP
//! components the way `spin up` does, providing only what our components import: WASI 0.2,
//! wasi:http 0.2 (incoming and outgoing), and Spin's MySQL, variables and key-value interfaces.
//! It knows Spin, not this project's services: any Spin app using these capabilities runs.

pub mod allowed_hosts;
mod bindings;
pub mod compile_cache;
pub mod key_value;
pub mod manifest;
pub mod mysql;
mod outbound;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod variables;
