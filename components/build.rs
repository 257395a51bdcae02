//! The build script of both components (`build = "../build.rs"` in their Cargo.toml).
//!
//! It sets one thing: the size of the stack in linear memory. rustc reserves 1 MiB for it on
//! wasm32 by default, the largest part of a component's memory at instantiation. Wasmtime's
//! pooling allocator, which Spin uses, resets every accessible byte of an instance's memory up to
//! its keep-resident size after each request, used or not; with 1 MiB of stack that `memset` was
//! about 7% of the local host's CPU for a `GET /users/me` (docs/benchmarks.md). The deepest
//! stack our tests reach is serde_json at its nesting limit (tests/attack_input.rs), which needs
//! more than 32 KiB and at most 64 KiB; 256 KiB leaves four times that. A stack overflow traps
//! the instance (the stack sits below the data, so it cannot overwrite it): a 500, not corruption.

const STACK_SIZE_BYTES: u32 = 256 * 1024;

fn main() {
    println!("cargo::rerun-if-changed=../build.rs");
    if std::env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|family| family.split(',').any(|f| f == "wasm")) {
        println!("cargo::rustc-link-arg-cdylib=-zstack-size={STACK_SIZE_BYTES}");
    }
}
