//! openapi/auth.yaml against the running component: every documented operation is served (no
//! routing 404/405), and no other method is served on a documented path. The reverse direction
//! (every route in the component's table is documented) is the unit test
//! `routes::tests::the_openapi_document_describes_exactly_these_routes` in `cargo test -p auth`.

#[path = "auth_support.rs"]
mod support;

use integration_tests::repo_root;
use support::*;

/// (METHOD, path) pairs under `paths:` (paths indented two spaces, methods four).
fn operations(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(rest) = line.strip_prefix("  ").filter(|r| !r.starts_with(' ')) {
            path = rest.trim_end().strip_suffix(':').map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("    ").filter(|r| !r.starts_with(' ')) {
            let key = rest.trim_end().trim_end_matches(':');
            if ["get", "put", "post", "delete", "patch"].contains(&key) {
                out.push((key.to_ascii_uppercase(), path.clone().expect("path before method")));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_documented_operation_is_served_and_nothing_else() {
    let yaml = std::fs::read_to_string(repo_root().join("openapi/auth.yaml")).expect("openapi/auth.yaml");
    assert!(yaml.starts_with("openapi: 3.1"), "OpenAPI 3.1");
    let documented = operations(&yaml);
    assert_eq!(documented.len(), 12, "{documented:?}");
    let app = app().await;
    let mut paths: Vec<&str> = documented.iter().map(|(_, p)| p.as_str()).collect();
    paths.dedup();
    for path in paths {
        let concrete = path.replace("{id}", "0190aaaa-0000-7000-8000-000000000000");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let answer = send(&app, method, &concrete, None, Some(serde_json::json!({}))).await;
            let is_documented = documented.iter().any(|(m, p)| m == method && p == path);
            let routed = !(answer.status == 404 && answer.body["code"] == "not_found") && answer.status != 405;
            assert_eq!(routed, is_documented, "{method} {path}: {} {}", answer.status, answer.text);
            if !is_documented {
                assert_problem(&answer, 405, "method_not_allowed");
                assert!(answer.allow.is_some(), "{method} {path}: Allow");
            }
        }
    }
}
