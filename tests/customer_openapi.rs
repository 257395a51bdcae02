//! openapi/customer.yaml describes exactly the routes customer serves: the operations in the
//! document equal the routes registered in components/customer/src/lib.rs, and each documented
//! operation is answered by the running component (never the router's "no such route").

use std::collections::BTreeSet;

use integration_tests::{openapi_operations, repo_root, spawn_app};
use serde_json::Value;

fn served() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(repo_root().join("components/customer/src/lib.rs")).unwrap();
    let mut ops = BTreeSet::new();
    for line in source.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("router.") else { continue };
        let (method, rest) = rest.split_once('(').unwrap();
        if method == "any" || method == "handle" {
            continue;
        }
        let path = rest.split('"').nth(1).unwrap();
        let path: Vec<String> = path
            .split('/')
            .map(|seg| seg.strip_prefix(':').map_or(seg.to_string(), |name| format!("{{{name}}}")))
            .collect();
        ops.insert((method.to_uppercase(), path.join("/")));
    }
    ops
}

#[test]
fn the_document_lists_exactly_the_served_routes() {
    let (doc, documented) = openapi_operations("customer.yaml");
    assert_eq!(doc["openapi"].as_str().unwrap_or(""), "3.1.0");
    let served = served();
    assert!(served.len() >= 12, "{served:?}");
    assert_eq!(documented, served, "openapi/customer.yaml and lib.rs disagree");
}

#[tokio::test]
async fn every_documented_operation_is_answered_by_customer() {
    let (doc, documented) = openapi_operations("customer.yaml");
    let app = spawn_app().await.expect("app starts");
    for (method, path) in documented {
        // In the combined app /api/v3/auth/login is auth's: customer serves it only when deployed alone.
        if doc["paths"][path.as_str()][method.to_lowercase().as_str()]["x-split-deployment-only"].as_bool() == Some(true) {
            continue;
        }
        let concrete = path.replace("{id}", "00000000-0000-4000-8000-000000000000");
        let response = app.client.request(method.parse().unwrap(), app.url(&concrete)).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !(status == 404 && body["code"] == "not_found" && body["detail"].as_str().unwrap_or("").starts_with("No resource")),
            "{method} {path} is not routed: {body}"
        );
    }
}
