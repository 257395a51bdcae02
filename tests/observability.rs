//! Observability on the local host, with `SPIN_LOCAL_LOG_JSON=1`: request ids (taken, validated,
//! made up, echoed in `x-request-id` and in problem+json, propagated to auth), one JSON object per
//! log line (the host's and the components', also under concurrency), and no password, email,
//! token or key in the log.

use std::time::Duration;

use integration_tests::{TestApp, join_all, register_account, spawn_app_with_env};
use serde_json::{Value, json};

async fn app() -> TestApp {
    spawn_app_with_env(|_| {}, &[("SPIN_LOCAL_LOG_JSON", "1")]).await.expect("app starts")
}

/// Every line of the host's log, each parsed as one JSON object (panics on any other line).
fn lines(app: &TestApp) -> Vec<Value> {
    let log = app.host.log();
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => panic!("a log line is not one JSON object: {line:?}\nwhole log:\n{log}"),
        })
        .collect()
}

/// Whether the host wrote this line (its `target` is its module; a component's `call` lines use
/// `target` for the service called).
fn from_host(line: &Value) -> bool {
    line["target"].as_str().is_some_and(|t| t.starts_with("spin_local"))
}

/// The lines a component wrote.
fn component_lines(app: &TestApp, component: &str) -> Vec<Value> {
    lines(app).into_iter().filter(|l| l["component"] == component && !from_host(l)).collect()
}

/// Waits (briefly) until some line satisfies `found`; lines are written before the answer is sent,
/// so this only guards against a slow file system.
async fn wait_for(app: &TestApp, what: &str, found: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..40 {
        if let Some(line) = lines(app).into_iter().find(|l| found(l)) {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line {what}:\n{}", app.host.log());
}

fn request_id_header(response: &reqwest::Response) -> String {
    response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).expect("x-request-id on every answer").to_string()
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn a_request_id_comes_back_and_is_in_auths_line_for_the_chained_call() {
    let app = app().await;
    let id = format!("obs-{}", uuid::Uuid::new_v4().simple());
    let response = app.client.get(app.url("/api/v3/customers/health")).header("x-request-id", &id).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(request_id_header(&response), id);

    // Auth's own line for the request customer made to it, and the host's line for that chained call.
    let auth = wait_for(&app, "from auth with the request id", |l| {
        l["component"] == "auth" && !from_host(l) && l["message"] == "request" && l["request_id"] == id.as_str()
    })
    .await;
    assert_eq!(auth["route"], "/api/v3/auth/health", "{auth}");
    assert_eq!((auth["method"].as_str(), auth["status"].as_u64()), (Some("GET"), Some(200)), "{auth}");
    assert!(auth["duration_ms"].as_f64().is_some(), "{auth}");
    let host = wait_for(&app, "from the host for the chained call", |l| {
        l["target"] == "spin_local_host::server" && l["component"] == "auth" && l["chained"] == true
    })
    .await;
    assert_eq!(host["request_id"], id.as_str(), "{host}");

    // Customer: its call to auth, its call to Stripe and its request, all with the id; and the
    // trace customer started is the one auth continued.
    let customer = component_lines(&app, "customer");
    let call_to = |target: &str| {
        customer
            .iter()
            .find(|l| l["message"] == "call" && l["target"] == target)
            .unwrap_or_else(|| panic!("no call to {target}: {customer:?}"))
            .clone()
    };
    let to_auth = call_to("auth");
    assert_eq!(to_auth["request_id"], id.as_str());
    assert_eq!((to_auth["method"].as_str(), to_auth["path"].as_str()), (Some("GET"), Some("/api/v3/auth/health")));
    assert_eq!((to_auth["status"].as_u64(), to_auth["attempt"].as_u64()), (Some(200), Some(1)), "{to_auth}");
    let to_stripe = call_to("stripe");
    assert_eq!(to_stripe["request_id"], id.as_str());
    assert_eq!(to_stripe["path"], "/v1/balance");
    let request = customer.iter().find(|l| l["message"] == "request").expect("customer's request line");
    assert_eq!(request["request_id"], id.as_str());
    assert_eq!(request["route"], "/api/v3/customers/health");
    assert_eq!(request["status"], 200);
    assert!(request["trace_id"].as_str().is_some_and(is_generated_id), "{request}");
    assert_eq!(auth["trace_id"], request["trace_id"], "auth continues customer's trace");
    for line in [&auth, &to_auth, request] {
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
    }
}

/// `?include=profile` asks auth for the caller's profile before customer has verified the
/// token. When customer then refuses the token, that call is not cut off: its answer is awaited
/// and logged, marked unused, and auth's log stays JSON (a Spin component whose caller went away
/// writes a plain-text line).
#[tokio::test]
async fn a_profile_call_started_for_a_request_then_refused_is_logged_as_unused() {
    let app = app().await;
    let email = format!("unused-{}@example.com", uuid::Uuid::new_v4().simple());
    let session = register_account(&app.client, &app.host, "Abe", &email, "unused-call-77").await;
    let token = session["access_token"].as_str().expect("an access token");
    // The same header and claims, another signature: customer refuses it after the call started.
    let (signed, signature) = token.rsplit_once('.').expect("a JWT");
    let mut forged_signature: Vec<char> = signature.chars().collect();
    forged_signature[10] = if forged_signature[10] == 'A' { 'B' } else { 'A' };
    let forged = format!("{signed}.{}", forged_signature.into_iter().collect::<String>());
    let id = format!("obs-{}", uuid::Uuid::new_v4().simple());

    let response = app
        .client
        .get(app.url("/api/v3/customers/me?include=profile"))
        .bearer_auth(&forged)
        .header("x-request-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let call = wait_for(&app, "for customer's unused call to auth", |l| {
        l["component"] == "customer"
            && !from_host(l)
            && l["message"] == "call"
            && l["request_id"] == id.as_str()
            && l["path"] == "/api/v3/users/me"
    })
    .await;
    assert_eq!((call["target"].as_str(), call["method"].as_str()), (Some("auth"), Some("GET")), "{call}");
    assert_eq!(call["unused"], true, "{call}");
    assert_eq!(call["status"], 401, "auth refused the forged token too: {call}");
    assert!(call["duration_ms"].as_f64().is_some(), "{call}");
    // Auth answered its chained request (and so wrote no plain-text line: `lines` checks).
    wait_for(&app, "for auth's own line for the chained request", |l| {
        l["component"] == "auth" && !from_host(l) && l["message"] == "request" && l["request_id"] == id.as_str() && l["status"] == 401
    })
    .await;
    // The host's line for the client's request comes once customer has answered, which it does
    // only after reading auth's whole answer: auth has nothing left to write for this request.
    wait_for(&app, "from the host for the client's request", |l| {
        l["target"] == "spin_local_host::server" && l["component"] == "customer" && l["chained"] == false && l["request_id"] == id.as_str()
    })
    .await;
    let auth_warnings: Vec<Value> =
        lines(&app).into_iter().filter(|l| l["component"] == "auth" && l["request_id"] == id.as_str() && l["level"] != "INFO").collect();
    assert!(auth_warnings.is_empty(), "auth's answer was delivered in full: {auth_warnings:?}");
}

/// A client that goes away before its answer (here during a login's argon2 work) leaves one
/// JSON `WARN` line with the request's id, not the SDK's plain-text line.
///
/// The client leaves 10 ms after sending: after the host has handed the request to auth, and
/// long before a login's password-hash check (tens of milliseconds) is done. If the host saw the
/// client go before it started auth at all (a very loaded machine), auth wrote nothing for that
/// request: the attempt is repeated, and only attempts that auth ran are judged.
#[tokio::test]
async fn an_answer_the_client_never_took_is_logged_as_one_json_line() {
    use tokio::io::AsyncWriteExt as _;

    let app = app().await;
    let address = app.host.base_url.trim_start_matches("http://").to_string();
    let body = json!({"email": "nobody@example.com", "password": "a password nobody has"}).to_string();
    let ran = |id: &str, l: &Value| l["component"] == "auth" && !from_host(l) && l["message"] == "request" && l["request_id"] == id;
    for _attempt in 0..5 {
        let id = format!("obs-{}", uuid::Uuid::new_v4().simple());
        let request = format!(
            "POST /api/v3/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             x-request-id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut client = tokio::net::TcpStream::connect(&address).await.expect("connects");
        client.write_all(request.as_bytes()).await.expect("sends");
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(client);

        // Auth's request line comes once its work is done (a few hundred ms at most).
        let mut auth_ran = false;
        for _ in 0..60 {
            // `lines` panics on any line that is not one JSON object.
            if lines(&app).iter().any(|l| ran(&id, l)) {
                auth_ran = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !auth_ran {
            continue;
        }
        let warning = wait_for(&app, "for the undelivered answer", |l| {
            l["component"] == "auth" && !from_host(l) && l["request_id"] == id.as_str() && l["level"] == "WARN"
        })
        .await;
        assert_eq!(warning["message"], "response not delivered: the caller went away", "{warning}");
        assert!(lines(&app).iter().any(|l| ran(&id, l) && l["status"] == 401));
        return;
    }
    panic!("in 5 attempts the host never started auth for a request whose client left after 10 ms:\n{}", app.host.log());
}

/// A body cut short (the client sent fewer bytes than its `Content-Length`, then closed its
/// side) is the client's failure: 400 `unreadable_body` problem+json with the request id, and a
/// JSON `WARN` line, on both services (the SDK's default is a plain-text 500 and plain-text logs).
#[tokio::test]
async fn a_body_cut_short_is_a_400_problem_and_a_json_warning() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let app = app().await;
    let address = app.host.base_url.trim_start_matches("http://").to_string();
    for (component, path) in [("auth", "/api/v3/auth/login"), ("customer", "/api/v3/customers")] {
        let id = format!("obs-{}", uuid::Uuid::new_v4().simple());
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nx-request-id: {id}\r\n\
             Connection: close\r\nContent-Length: 200\r\n\r\n{{\"email\":"
        );
        let mut client = tokio::net::TcpStream::connect(&address).await.expect("connects");
        client.write_all(request.as_bytes()).await.expect("sends");
        client.shutdown().await.expect("closes its side");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut answer))
            .await
            .expect("answers in time")
            .expect("reads the answer");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 400 "), "{component}: {answer}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: application/problem+json"), "{component}: {answer}");
        assert!(head.contains(&format!("x-request-id: {id}")), "{component}: {answer}");
        assert!(body.contains("\"code\":\"unreadable_body\""), "{component}: {answer}");

        let warning = wait_for(&app, "for the unread body", |l| {
            l["component"] == component && !from_host(l) && l["request_id"] == id.as_str() && l["level"] == "WARN"
        })
        .await;
        assert_eq!(warning["message"], "request body not read", "{warning}");
        assert_eq!(warning["path"], path, "{warning}");
    }
}

#[tokio::test]
async fn a_traceparent_gives_the_request_id_and_the_trace_to_auth() {
    let app = app().await;
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let response = app.client.get(app.url("/api/v3/customers/health")).header("traceparent", &traceparent).send().await.unwrap();
    assert_eq!(request_id_header(&response), trace);
    let auth = wait_for(&app, "from auth for the trace", |l| {
        l["component"] == "auth" && !from_host(l) && l["message"] == "request" && l["request_id"] == trace.as_str()
    })
    .await;
    assert_eq!(auth["trace_id"], trace.as_str(), "the same trace id, through customer's traceparent: {auth}");
}

#[tokio::test]
async fn problems_carry_the_request_id_of_the_header() {
    let app = app().await;
    let problem = |response: reqwest::Response| async move {
        let header = request_id_header(&response);
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body: Value = response.json().await.expect("json body");
        assert_eq!(content_type, "application/problem+json", "{body}");
        assert_eq!(body["request_id"], header.as_str(), "{body}");
        (header, body)
    };

    // Auth (401) and customer (401), with an id given and without.
    let (id, body) = problem(app.client.get(app.url("/api/v3/users/me")).header("x-request-id", "report-1").send().await.unwrap()).await;
    assert_eq!((id.as_str(), body["code"].as_str()), ("report-1", Some("missing_token")));
    let (id, _) = problem(app.client.get(app.url("/api/v3/users/me")).send().await.unwrap()).await;
    assert!(is_generated_id(&id), "{id}");
    let (id, body) =
        problem(app.client.get(app.url("/api/v3/customers/me")).header("x-request-id", "report-2").send().await.unwrap()).await;
    assert_eq!((id.as_str(), body["code"].as_str()), ("report-2", Some("missing_token")));
    // Auth's 405 and 422, customer's router answers (405 and 404) and its 422 after a chained JWKS fetch.
    let (_, body) = problem(app.client.delete(app.url("/api/v3/auth/login")).send().await.unwrap()).await;
    assert_eq!(body["code"], "method_not_allowed");
    let (_, body) = problem(app.client.post(app.url("/api/v3/auth/register")).json(&json!({"name": "A"})).send().await.unwrap()).await;
    assert_eq!(body["code"], "validation_failed");
    let (_, body) = problem(app.client.put(app.url("/api/v3/customers")).send().await.unwrap()).await;
    assert_eq!((body["status"].as_u64(), body["code"].as_str()), (Some(405), Some("method_not_allowed")), "{body}");
    let (_, body) = problem(app.client.get(app.url("/api/v3/billing/nothing")).send().await.unwrap()).await;
    assert_eq!(body["code"], "not_found");
    let email = format!("p-{}@example.org", uuid::Uuid::new_v4().simple());
    let session = register_account(&app.client, &app.host, "Pat", &email, "problem-report-77").await;
    let token = session["access_token"].as_str().expect("registered");
    let (id, body) = problem(
        app.client
            .post(app.url("/api/v3/customers"))
            .bearer_auth(token)
            .header("x-request-id", "report-3")
            .json(&json!({"area_ids": "none"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((id.as_str(), body["code"].as_str()), ("report-3", Some("validation_failed")));
    // The customer's line for that request, and auth's line for the JWKS fetch it made.
    let customer = wait_for(&app, "for report-3 from customer", |l| l["component"] == "customer" && l["message"] == "request" && l["request_id"] == "report-3").await;
    assert_eq!(customer["status"], 422);
    wait_for(&app, "for report-3 from auth", |l| {
        l["component"] == "auth" && !from_host(l) && l["route"] == "/.well-known/jwks.json" && l["request_id"] == "report-3"
    })
    .await;

    // Successes carry the header too.
    let ok = app.client.get(app.url("/.well-known/jwks.json")).header("x-request-id", "ok-1").send().await.unwrap();
    assert_eq!((ok.status().as_u16(), request_id_header(&ok)), (200, "ok-1".to_string()));
}

#[tokio::test]
async fn an_invalid_request_id_is_replaced() {
    let app = app().await;
    let long = "a".repeat(129);
    let invalid: Vec<reqwest::header::HeaderValue> = vec![
        "has space".parse().unwrap(),
        long.parse().unwrap(),
        "semi;colon".parse().unwrap(),
        r#"{"level":"ERROR"}"#.parse().unwrap(),
        "".parse().unwrap(),
        reqwest::header::HeaderValue::from_bytes("café".as_bytes()).unwrap(),
    ];
    for value in &invalid {
        for path in ["/api/v3/auth/health", "/api/v3/customers/health"] {
            let response = app.client.get(app.url(path)).header("x-request-id", value.clone()).send().await.unwrap();
            let id = request_id_header(&response);
            assert!(is_generated_id(&id), "{path} {value:?}: {id}");
        }
    }
    // The edge of valid: 128 characters of the allowed set are kept.
    let longest = format!("{}.:_-", "Z9".repeat(62));
    assert_eq!(longest.len(), 128);
    let response = app.client.get(app.url("/api/v3/auth/health")).header("x-request-id", &longest).send().await.unwrap();
    assert_eq!(request_id_header(&response), longest);
    // An invalid id never reaches the log (no log injection).
    let log = app.host.log();
    assert!(!log.contains("has space") && !log.contains(&long) && !log.contains("semi;colon"), "{log}");
    assert!(!log.contains(r#"{\"level\""#) && !log.contains("café"), "{log}");
}

#[tokio::test]
async fn logs_hold_no_password_email_token_or_key() {
    let app = app().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("Secret.Person+{tag}@Example.org");
    let password = format!("never-log-this-{tag}");
    let wrong = format!("wrong-guess-{tag}");
    let name = format!("Hidden Name {tag}");
    let post = |path: &str, body: Value| app.client.post(app.url(path)).json(&body).send();

    let registered = post("/api/v3/auth/register", json!({"name": name, "email": email, "password": password})).await.unwrap();
    assert_eq!(registered.status(), 201);
    let again = post("/api/v3/auth/register", json!({"name": name, "email": email, "password": password})).await.unwrap();
    assert_eq!(again.status(), 409);
    let refused = post("/api/v3/auth/login", json!({"email": email, "password": wrong})).await.unwrap();
    assert_eq!(refused.status(), 401);
    let session: Value = post("/api/v3/auth/login", json!({"email": email, "password": password})).await.unwrap().json().await.unwrap();
    let access = session["access_token"].as_str().expect("logged in").to_string();
    let refresh = session["refresh_token"].as_str().expect("refresh token").to_string();
    let refreshed: Value = post("/api/v3/auth/refresh", json!({"refresh_token": refresh})).await.unwrap().json().await.unwrap();
    let access2 = refreshed["access_token"].as_str().expect("refreshed").to_string();
    let get = |path: &str, token: &str| app.client.get(app.url(path)).bearer_auth(token).send();
    assert_eq!(get("/api/v3/users/me", &access).await.unwrap().status(), 200);
    assert_eq!(get("/api/v3/users/me", "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.Zm9yZ2Vk").await.unwrap().status(), 401);
    // Customer: JWKS from auth, the profile (service token, name and email) from auth, then Stripe
    // (customer search by email, create with name and email).
    let created = app
        .client
        .post(app.url("/api/v3/customers"))
        .bearer_auth(&access2)
        .json(&json!({"area_ids": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", app.host.log());
    let me: Value = get("/api/v3/customers/me?include=profile", &access2).await.unwrap().json().await.unwrap();
    assert!(me["profile"]["email"].is_string(), "{me}");

    // The log saw all of that: it has the calls, and none of the secrets.
    let all = lines(&app);
    assert!(all.iter().any(|l| l["message"] == "call" && l["target"] == "stripe" && l["method"] == "POST"), "no Stripe call logged");
    assert!(all.iter().any(|l| l["message"] == "call" && l["target"] == "auth" && l["path"].as_str().is_some_and(|p| p.starts_with("/api/v3/users/"))));
    let log = app.host.log();
    let lower = log.to_lowercase();
    let mut secrets = vec![
        email.to_lowercase(),
        email.replace('@', "%40").to_lowercase(),
        format!("secret.person+{tag}"),
        password.clone(),
        wrong.clone(),
        name.to_lowercase(),
        access.to_lowercase(),
        access2.to_lowercase(),
        refresh.to_lowercase(),
    ];
    for variable in ["encryption_key", "token_signing_keys", "service_token_key", "stripe_secret_key", "stripe_webhook_secret"] {
        let value = &app.variables[variable];
        secrets.extend(value.split([',', ':']).filter(|part| part.len() >= 16).map(str::to_lowercase));
    }
    for secret in &secrets {
        assert!(!lower.contains(secret.as_str()), "the log holds a secret ({} chars)", secret.len());
    }
    assert!(!log.contains("eyJ"), "no JWT (any token's header) in the log");
    assert!(!lower.contains("@example.org"), "no email address in the log");
}

#[tokio::test]
async fn concurrent_requests_still_give_one_json_object_per_line() {
    let app = app().await;
    let requests = (0..24).map(|i| {
        let path = if i % 2 == 0 { "/api/v3/customers/health" } else { "/api/v3/users/me" };
        app.client.get(app.url(path)).header("x-request-id", format!("burst-{i}")).send()
    });
    for response in join_all(requests).await {
        assert!(response.expect("answered").headers().contains_key("x-request-id"));
    }
    let all = lines(&app);
    for i in 0..24 {
        let id = format!("burst-{i}");
        assert!(all.iter().any(|l| l["request_id"] == id.as_str() && l["message"] == "request"), "{id}");
    }
}

