//! What the build produced. Least privilege: every import of each built component belongs to
//! its world in `wit/worlds.wit`. Interfaces are compared without their version (spin-sdk 5.2
//! imports WASI 0.2.x patch versions that may differ from the world's). And size: issue 3's
//! budget of 1 MB (10^6 bytes) for auth.wasm, so a dependency or feature that crosses it fails
//! here rather than in a later benchmark; customer.wasm (0.79 MB) is held to the same budget.

use std::collections::BTreeSet;

use integration_tests::{component_wasm, repo_root};

fn unversioned(name: &str) -> String {
    name.split('@').next().unwrap_or(name).to_string()
}

/// The interface names a world imports (following `include`s).
fn world_imports(world: &str) -> BTreeSet<String> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(repo_root().join("wit")).expect("wit/ parses");
    let world_id = resolve.select_world(&[package], Some(world)).expect("world exists");
    resolve.worlds[world_id]
        .imports
        .keys()
        .map(|key| unversioned(&resolve.name_world_key(key)))
        .collect()
}

/// The instance imports of a component binary.
fn component_imports(wasm: &[u8]) -> BTreeSet<String> {
    let mut imports = BTreeSet::new();
    // parse_all also walks nested modules and components: count depth, keep the outermost.
    let mut depth = 0;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.expect("valid wasm") {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.insert(unversioned(import.expect("valid import").name.name));
                }
            }
            _ => {}
        }
    }
    imports
}

fn check(component: &str, world: &str) {
    let wasm = std::fs::read(component_wasm(component).expect("built")).expect("readable");
    let allowed = world_imports(world);
    let actual = component_imports(&wasm);
    assert!(!actual.is_empty(), "{component}: no imports found; the check would be vacuous");
    let outside: Vec<_> = actual.difference(&allowed).collect();
    assert!(outside.is_empty(), "{component} imports outside its world `{world}`: {outside:?}\n(allowed: {allowed:?})");
}

#[test]
fn auth_imports_only_its_world() {
    check("auth", "auth");
}

#[test]
fn customer_imports_only_its_world() {
    check("customer", "customer");
}

#[test]
fn auth_may_not_send_http_or_use_key_value() {
    let allowed = world_imports("auth");
    assert!(!allowed.contains("wasi:http/outgoing-handler"));
    assert!(!allowed.contains("fermyon:spin/key-value"));
    let customer = world_imports("customer");
    assert!(customer.contains("wasi:http/outgoing-handler"));
}

const SIZE_BUDGET_BYTES: u64 = 1_000_000;

fn check_size(component: &str) {
    let path = component_wasm(component).expect("built");
    let size = std::fs::metadata(&path).expect("readable").len();
    assert!(size <= SIZE_BUDGET_BYTES, "{component}.wasm is {size} bytes, over the budget of {SIZE_BUDGET_BYTES}");
}

#[test]
fn auth_fits_the_size_budget() {
    check_size("auth");
}

#[test]
fn customer_fits_the_size_budget() {
    check_size("customer");
}
