//! The local host behaves like Spin where a component can tell: routing and Spin's headers,
//! variables, allowed outbound hosts (HTTP and MySQL), service chaining, key-value, and Spin's
//! MySQL type mapping (TIMESTAMP unreadable unless selected as UNIX_TIMESTAMP).
//! Runs the test-only `probe` component (tests/fixtures/probe).

use std::collections::BTreeMap;

use integration_tests::{HostProcess, TestDatabase, repo_root};
use mysql_async::prelude::Queryable as _;
use serde_json::Value;

struct Probe {
    host: HostProcess,
    client: reqwest::Client,
}

impl Probe {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let mut variables = BTreeMap::from([("secret_token".to_string(), "s3cret-token".to_string())]);
        for (name, value) in extra {
            variables.insert(name.to_string(), value.to_string());
        }
        let manifest = repo_root().join("tests/fixtures/probe/spin.toml");
        let host = HostProcess::start(&manifest, &variables).await.expect("probe host starts");
        Self { host, client: reqwest::Client::new() }
    }

    async fn get(&self, path_and_query: &str) -> Value {
        let response = self.client.get(self.host.url(path_and_query)).send().await.expect("probe answers");
        assert_eq!(response.status(), 200, "{path_and_query}");
        response.json().await.expect("probe answers JSON")
    }
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn routes_and_spin_headers_match_spin() {
    let probe = Probe::start(&[]).await;
    let exact = probe.get("/exact").await;
    assert_eq!(exact["headers"]["spin-matched-route"], "/exact");
    assert_eq!(exact["headers"]["spin-path-info"], "");
    assert_eq!(exact["headers"]["spin-component-route"], "/exact");

    let wildcard = probe.get("/some/deep/path").await;
    assert_eq!(wildcard["path"], "/some/deep/path");
    let headers = probe.get("/headers").await;
    assert_eq!(headers["headers"]["spin-matched-route"], "/...");
    assert_eq!(headers["headers"]["spin-path-info"], "/headers");
    assert_eq!(headers["headers"]["spin-base-path"], "/");
    assert!(headers["headers"]["spin-client-addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(headers["headers"]["spin-full-url"].as_str().unwrap().ends_with("/headers"));

    let named = probe.get("/users/42").await;
    assert_eq!(named["headers"]["spin-path-match-id"], "42");

    // A client's own spin-* header comes before Spin's, which is what the component reads last.
    let forged = probe.client.get(probe.host.url("/headers")).header("spin-client-addr", "203.0.113.50:443").send().await.unwrap();
    let forged: Value = forged.json().await.unwrap();
    assert!(forged["headers"]["spin-client-addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{forged}");
    // As Spin: a header value that is not UTF-8 fails the request before the component runs.
    let latin1 = reqwest::header::HeaderValue::from_bytes(b"Andr\xe9").unwrap();
    let refused = probe.client.get(probe.host.url("/headers")).header("x-name", latin1).send().await.unwrap();
    assert_eq!(refused.status(), 500);
    assert!(probe.host.log().contains("is not UTF-8"), "{}", probe.host.log());
}

#[tokio::test]
async fn components_read_only_their_own_variables() {
    let probe = Probe::start(&[("greeting", "hi")]).await;
    assert_eq!(probe.get("/variable?name=greeting").await["ok"], "hi, world");
    assert_eq!(probe.get("/variable?name=token").await["ok"], "s3cret-token");
    let undeclared = probe.get("/variable?name=secret_token").await;
    assert!(undeclared["error"].as_str().unwrap().contains("Undefined"), "{undeclared}");
    let invalid = probe.get("/variable?name=Not-Valid").await;
    assert!(invalid["error"].as_str().unwrap().contains("InvalidName"), "{invalid}");
    assert!(!probe.host.log().contains("s3cret-token"), "a secret reached the host log");
}

#[tokio::test]
async fn compiled_components_are_cached_unless_the_cache_is_disabled() {
    let folder = tempfile::tempdir().unwrap();
    let config = folder.path().join("cache.toml");
    let entries = folder.path().join("entries");
    std::fs::write(&config, format!("[cache]\ndirectory = {:?}\n", entries.display().to_string())).unwrap();
    let manifest = repo_root().join("tests/fixtures/probe/spin.toml");
    let variables = BTreeMap::from([("secret_token".to_string(), "s3cret-token".to_string())]);
    let start = |env: Vec<(&'static str, String)>| {
        let (manifest, variables) = (manifest.clone(), variables.clone());
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let host = HostProcess::start_with_env(&manifest, &variables, &env).await.expect("probe host starts");
            let log = host.log();
            host.stop().await;
            log
        }
    };
    let with_cache = || vec![("WASMTIME_CACHE_FILE", config.display().to_string())];
    let first = start(with_cache()).await;
    assert!(first.contains("from_cache=false"), "{first}");
    assert!(std::fs::read_dir(&entries).map(|mut dir| dir.next().is_some()).unwrap_or(false), "the cache folder has entries\n{first}");
    let second = start(with_cache()).await;
    assert!(second.contains("from_cache=true"), "the second start loads the compiled component\n{second}");
    let disabled = start(vec![("DISABLE_WASMTIME_CACHE", "1".to_string())]).await;
    assert!(disabled.contains("cache=disabled") && disabled.contains("from_cache=false"), "{disabled}");
}

#[tokio::test]
async fn a_required_variable_without_value_stops_startup() {
    let manifest = repo_root().join("tests/fixtures/probe/spin.toml");
    let error = HostProcess::start(&manifest, &BTreeMap::new()).await.err().expect("startup must fail");
    assert!(error.to_string().contains("secret_token"), "{error}");
}

#[tokio::test]
async fn outbound_http_is_limited_to_allowed_hosts() {
    // A plain HTTP server on loopback that the probe may, or may not, reach.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nreached")
                .await;
        }
    });

    let allowed = Probe::start(&[("allowed_port", &port.to_string())]).await;
    let url = format!("http://127.0.0.1:{port}/x");
    let reached = allowed.get(&format!("/outbound?url={}", encode(&url))).await;
    assert_eq!(reached["status"], 200, "{reached}");
    assert_eq!(reached["body"], "reached");

    let denied = Probe::start(&[]).await; // allowed_port defaults to 1
    let refused = denied.get(&format!("/outbound?url={}", encode(&url))).await;
    assert!(refused["error"].as_str().unwrap().contains("HttpRequestDenied"), "{refused}");
    assert!(denied.host.log().contains("outbound request denied"), "the host logs why");

    let elsewhere = denied.get(&format!("/outbound?url={}", encode("https://api.stripe.com/v1/customers"))).await;
    assert!(elsewhere["error"].as_str().unwrap().contains("HttpRequestDenied"), "{elsewhere}");
}

#[tokio::test]
async fn service_chaining_reaches_a_private_component_with_spins_headers() {
    let probe = Probe::start(&[]).await;
    let chained = probe.get(&format!("/outbound?url={}", encode("http://backend.spin.internal/headers"))).await;
    assert_eq!(chained["status"], 200, "{chained}");
    let inner: Value = serde_json::from_str(chained["body"].as_str().unwrap()).unwrap();
    assert_eq!(inner["headers"]["spin-client-addr"], "0.0.0.0:0");
    assert_eq!(inner["headers"]["spin-path-info"], "/headers");
    assert_eq!(inner["headers"]["spin-matched-route"], "/...");
    assert_eq!(inner["headers"]["spin-component-route"], "");
    assert!(inner["headers"].get("host").is_none(), "Spin strips the *.spin.internal Host");

    // The private component has no public route...
    let public = reqwest::get(probe.host.url("/")).await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(public["component"], "probe");
    // ...and a chaining target not listed in allowed_outbound_hosts is refused.
    let unlisted = probe.get(&format!("/outbound?url={}", encode("http://probe.spin.internal/hello"))).await;
    assert!(unlisted["error"].as_str().unwrap().contains("HttpRequestDenied"), "{unlisted}");
}

#[tokio::test]
async fn key_value_persists_across_requests_and_checks_labels() {
    let probe = Probe::start(&[]).await;
    assert_eq!(probe.get("/kv?store=default&key=k&value=v1").await["previous"], Value::Null);
    assert_eq!(probe.get("/kv?store=default&key=k&value=v2").await["previous"], "v1");
    let other = probe.get("/kv?store=other&key=k").await;
    assert!(other["error"].as_str().unwrap().contains("AccessDenied"), "{other}");
}

#[tokio::test]
async fn mysql_types_map_like_spin_and_timestamps_need_unix_timestamp() {
    let database = TestDatabase::create("probe").await.expect("test database");
    let mut conn = database.connect().await.unwrap();
    conn.query_drop(
        "CREATE TABLE sample (
            id BIGINT UNSIGNED PRIMARY KEY, small TINYINT, flag BOOLEAN, amount DOUBLE,
            name VARCHAR(50), note TEXT, raw VARBINARY(8), price DECIMAL(10,2),
            created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .await
    .unwrap();
    conn.query_drop("INSERT INTO sample (id, small, flag, amount, name, note, raw, price) VALUES (1, -3, TRUE, 2.5, 'Zoë', 'long text', x'0102', 9.99)")
        .await
        .unwrap();
    let probe = Probe::start(&[("db_address", &database.address)]).await;
    let query = |sql: &str| format!("/mysql?url={}&sql={}", encode(&database.url), encode(sql));

    let typed = probe.get(&query("SELECT id, small, flag, amount, name, note, raw FROM sample")).await;
    let types: Vec<&str> = typed["columns"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    let expected = ["Uint64", "Int8", "Int8", "Floating64", "Str", "Str", "Binary"].map(|t| format!("DbDataType::{t}"));
    assert_eq!(types, expected, "{typed}");
    assert_eq!(typed["rows"][0][4], "DbValue::Str(\"Zoë\")");

    let unix = probe.get(&query("SELECT UNIX_TIMESTAMP(created_at) AS created FROM sample")).await;
    assert_eq!(unix["columns"][0]["type"], "DbDataType::Int64", "{unix}");

    for unreadable in ["SELECT created_at FROM sample", "SELECT price FROM sample", "SELECT NOW()"] {
        let failed = probe.get(&query(unreadable)).await;
        assert!(
            failed["error"].as_str().unwrap_or("").contains("ValueConversionFailed"),
            "{unreadable} must fail as in Spin: {failed}"
        );
    }
    let cast = probe.get(&query("SELECT CAST(price AS CHAR) AS price FROM sample")).await;
    assert_eq!(cast["rows"][0][0], "DbValue::Str(\"9.99\")", "{cast}");
}

#[tokio::test]
async fn mysql_to_a_host_outside_allowed_hosts_is_refused() {
    let database = TestDatabase::create("probe").await.expect("test database");
    let probe = Probe::start(&[("db_address", "127.0.0.1:1")]).await;
    let refused = probe
        .get(&format!("/mysql?url={}&sql={}", encode(&database.url), encode("SELECT 1")))
        .await;
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("ConnectionFailed") && error.contains("not permitted"), "{refused}");
    // The stack's admin URL always carries a password: without one this check would prove nothing.
    let password = mysql_async::Opts::from_url(&database.url)
        .unwrap()
        .pass()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .expect("the test database URL carries a password (DB_ADMIN_URL from .local/stack.env)");
    assert!(!error.contains(&password), "the password leaked into the error");
    assert!(!probe.host.log().contains(&password), "the password leaked into the log");
}
