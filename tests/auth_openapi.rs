//! openapi/auth.yaml against the running component: every documented operation is served (no
//! routing 404/405), HEAD wherever GET is, and no other method on a documented path (405 with
//! an `Allow` that lists the documented ones). The reverse direction
//! (every route in the component's table is documented) is the unit test
//! `routes::tests::the_openapi_document_describes_exactly_these_routes` in `cargo test -p auth`.

#[path = "auth_support.rs"]
mod support;

use std::collections::BTreeSet;

use integration_tests::{assert_security_headers, expected_allow, openapi_operations};
use support::*;

#[tokio::test]
async fn every_documented_operation_is_served_and_nothing_else() {
    let (doc, documented) = openapi_operations("auth.yaml");
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"), "OpenAPI 3.1");
    assert_eq!(documented.len(), 21, "{documented:?}");
    let app = app().await;
    let paths: BTreeSet<&str> = documented.iter().map(|(_, p)| p.as_str()).collect();
    for path in paths {
        let concrete = path.replace("{id}", "0190aaaa-0000-7000-8000-000000000000");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let answer = send(&app, method, &concrete, None, Some(serde_json::json!({}))).await;
            let is_documented = documented.iter().any(|(m, p)| m == method && p == path);
            let routed = !(answer.status == 404 && answer.body["code"] == "not_found") && answer.status != 405;
            assert_eq!(routed, is_documented, "{method} {path}: {} {}", answer.status, answer.text);
            if !is_documented {
                assert_problem(&answer, 405, "method_not_allowed");
                assert_eq!(answer.allow.as_deref(), Some(expected_allow(&documented, path).as_str()), "{method} {path}: Allow");
            }
        }
        // Every answer (a read, a 401, a 405) carries the security headers.
        let raw = app.client.get(app.url(&concrete)).send().await.expect("answered");
        assert_security_headers(raw.headers(), &format!("GET {path}"));
        // HEAD is served wherever GET is: GET's status and headers, no body.
        if documented.contains(&("GET".to_string(), path.to_string())) {
            let head = send(&app, "HEAD", &concrete, None, None).await;
            let get = send(&app, "GET", &concrete, None, None).await;
            assert_eq!((head.status, &head.content_type), (get.status, &get.content_type), "HEAD {path}");
            assert!(head.text.is_empty(), "HEAD {path}: {}", head.text);
        }
    }
}

