//! `admin audit`: the audit rows the real components write are sealed into an HMAC chain, and
//! every way a database administrator could rewrite the trail afterwards (a row changed, one
//! deleted from the middle, rows cut from the end, the head changed or put back to an older one,
//! another key) is named by `verify`, which otherwise passes, also after a purge of old rows.

#[path = "auth_support.rs"]
mod support;

#[path = "customer_support.rs"]
mod cs;

#[path = "attack_support.rs"]
mod attack;

use admin::audit::{self, SealKey, Service, VerifyReport};
use attack::{Full, db_rows};
use integration_tests::TestDatabase;
use serde_json::json;

async fn verify(db: &TestDatabase, key: &SealKey, service: Service) -> VerifyReport {
    let mut conn = admin::legacy::connect(&db.url).await.expect("connection");
    let report = audit::verify(&mut conn, key, service, 3).await.expect("verify runs");
    eprintln!("{}", audit::render_verify(&report));
    report
}

/// Seals every row (no margin), in batches of 2 so that several transactions extend the chain.
async fn seal(db: &TestDatabase, key: &SealKey, service: Service) -> audit::SealReport {
    let mut conn = admin::legacy::connect(&db.url).await.expect("connection");
    let report = audit::seal(&mut conn, key, service, 0, 2).await.expect("seal runs");
    eprintln!("{}", audit::render_seal(&report));
    report
}

async fn count(db: &TestDatabase, sql: &str) -> u64 {
    db_rows(db, sql).await[0][0].parse().expect("a count")
}

/// Both services write audit rows: registrations, a failed login, customers.
async fn activity(full: &Full, n: usize) {
    for i in 0..n {
        let user = full.user("Ada", &format!("ada{i}-{}@example.org", uuid::Uuid::new_v4().simple())).await;
        let wrong = full.send("POST", "/api/v3/auth/login", None, Some(json!({"email": user.email, "password": "not-the-password-1"}))).await;
        assert_eq!(wrong.status, 401, "{}", wrong.text);
        full.customer(&user).await;
    }
}

fn seal_key(byte: u8) -> SealKey {
    use base64::Engine as _;
    SealKey::parse(&base64::engine::general_purpose::STANDARD.encode([byte; 32])).expect("key")
}

fn assert_problem(report: &VerifyReport, needle: &str) {
    assert!(report.problems.iter().any(|p| p.contains(needle)), "expected {needle:?} in {:?}", report.problems);
}

#[tokio::test]
async fn a_sealed_log_verifies_and_each_rewrite_of_it_is_named() {
    let full = attack::full().await;
    let (auth_db, customer_db) = (&full.app.auth_db, &full.app.customer_db);
    let key = seal_key(7);
    activity(&full, 3).await;

    for (db, service) in [(auth_db, Service::Auth), (customer_db, Service::Customer)] {
        let rows = count(db, "SELECT COUNT(*) FROM audit_log").await;
        assert!(rows >= 3, "{service:?} wrote audit rows: {rows}");
        let sealed = seal(db, &key, service).await;
        assert_eq!((sealed.sealed_now, sealed.head.rows_sealed, sealed.unsealed), (rows, rows, 0));
        let report = verify(db, &key, service).await;
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.rows_verified, report.unsealed, report.earlier_rows_gone), (rows, 0, false));
    }
    // New rows wait for the next seal, then extend the chain.
    let before = db_rows(auth_db, "SELECT sealed_through, head, rows_sealed, sealed_at, mac FROM audit_seal").await[0].clone();
    activity(&full, 1).await;
    let report = verify(auth_db, &key, Service::Auth).await;
    assert!(report.problems.is_empty() && report.unsealed >= 2, "{report:?}");
    let extended = seal(auth_db, &key, Service::Auth).await;
    assert_eq!(extended.sealed_now, report.unsealed);
    assert!(verify(auth_db, &key, Service::Auth).await.problems.is_empty());

    // Another key: the head and every row fail.
    let report = verify(auth_db, &seal_key(8), Service::Auth).await;
    assert_problem(&report, "is missing or does not match its MAC");
    assert_problem(&report, "its content or its seal was changed");

    // A row changed, then put back as it was.
    let middle: u64 = count(auth_db, "SELECT MIN(id) + 3 FROM audit_log").await;
    let reason = db_rows(auth_db, &format!("SELECT COALESCE(reason, 'NULL') FROM audit_log WHERE id = {middle}")).await[0][0].clone();
    db_rows(auth_db, &format!("UPDATE audit_log SET reason = 'rewritten' WHERE id = {middle}")).await;
    assert_problem(&verify(auth_db, &key, Service::Auth).await, &format!("row {middle}: its content or its seal was changed"));
    let original = if reason == "NULL" { reason } else { format!("'{reason}'") };
    db_rows(auth_db, &format!("UPDATE audit_log SET reason = {original} WHERE id = {middle}")).await;
    assert!(verify(auth_db, &key, Service::Auth).await.problems.is_empty(), "put back, it verifies again");

    // The head put back to an older one: the rows sealed after it still carry their seals.
    let newer = db_rows(auth_db, "SELECT sealed_through, head, rows_sealed, sealed_at, mac FROM audit_seal").await[0].clone();
    db_rows(auth_db, &format!(
        "UPDATE audit_seal SET sealed_through = {}, head = '{}', rows_sealed = {}, sealed_at = {}, mac = '{}'",
        before[0], before[1], before[2], before[3], before[4]
    ))
    .await;
    assert_problem(&verify(auth_db, &key, Service::Auth).await, "after the head carry seals");
    db_rows(auth_db, &format!(
        "UPDATE audit_seal SET sealed_through = {}, head = '{}', rows_sealed = {}, sealed_at = {}, mac = '{}'",
        newer[0], newer[1], newer[2], newer[3], newer[4]
    ))
    .await;

    // A row deleted from the middle.
    let gone = middle + 2;
    db_rows(auth_db, &format!("DELETE FROM audit_log WHERE id = {gone}")).await;
    assert_problem(&verify(auth_db, &key, Service::Auth).await, &format!("does not follow row {}", gone - 1));
    // A row put in its place.
    db_rows(auth_db, &format!("INSERT INTO audit_log (id, event, success, actor, client_addr) VALUES ({gone}, 'login', 1, 'user:x', '10.0.0.1')")).await;
    assert_problem(&verify(auth_db, &key, Service::Auth).await, &format!("row {gone}: not sealed, though the log was sealed past it"));

    // Customer: the head's own fields changed, then rows cut from the end.
    db_rows(customer_db, "UPDATE audit_seal SET rows_sealed = rows_sealed + 1").await;
    assert_problem(&verify(customer_db, &key, Service::Customer).await, "is missing or does not match its MAC");
    {
        let mut conn = admin::legacy::connect(&customer_db.url).await.expect("connection");
        let refused = audit::seal(&mut conn, &key, Service::Customer, 0, 2).await.expect_err("no chain extended past a changed head");
        assert!(refused.to_string().contains("run `admin audit verify`"), "{refused}");
    }
    db_rows(customer_db, "UPDATE audit_seal SET rows_sealed = rows_sealed - 1").await;
    assert!(verify(customer_db, &key, Service::Customer).await.problems.is_empty());
    let last: u64 = count(customer_db, "SELECT sealed_through FROM audit_seal").await;
    db_rows(customer_db, &format!("DELETE FROM audit_log WHERE id = {last}")).await;
    assert_problem(&verify(customer_db, &key, Service::Customer).await, &format!("but its head says row {last}"));
}

/// Rows purged from the start (`admin purge --audit-older-than-days`) are reported as gone,
/// not as tampering; the rest still verifies and sealing goes on.
#[tokio::test]
async fn a_purged_start_is_not_tampering() {
    let full = attack::full().await;
    let auth_db = &full.app.auth_db;
    let key = seal_key(9);
    activity(&full, 2).await;
    seal(auth_db, &key, Service::Auth).await;
    db_rows(auth_db, "UPDATE audit_log SET occurred_at = NOW() - INTERVAL 400 DAY ORDER BY id LIMIT 3").await;
    let cross = admin::legacy::CrossDb::new(Some(&auth_db.url), None, None);
    let settings = admin::purge::Settings::new(admin::purge::Service::Auth, 7, 30, Some(365), false).expect("settings");
    admin::purge::run(&cross, &settings).await.expect("purge");
    let first: u64 = count(auth_db, "SELECT MIN(id) FROM audit_log").await;
    let report = verify(auth_db, &key, Service::Auth).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.earlier_rows_gone, report.first_id), (true, Some(first)));
    activity(&full, 1).await;
    assert!(seal(auth_db, &key, Service::Auth).await.sealed_now > 0);
    assert!(verify(auth_db, &key, Service::Auth).await.problems.is_empty());
}

/// The binary: a key from `new-key`, the default margin leaves fresh rows alone, the head is
/// printed, and `verify` exits 2 on a rewritten row; no key, no run.
#[tokio::test]
async fn the_audit_commands_seal_verify_and_exit_2_on_tampering() {
    let full = attack::full().await;
    activity(&full, 1).await;
    let cwd = tempfile::tempdir().expect("a temporary folder");
    let run = |args: &'static [&'static str], key: Option<String>| {
        let mut cmd = integration_tests::admin_command(args, cwd.path());
        cmd.env("SPIN_VARIABLE_AUTH_DB_URL", &full.app.auth_db.url).env("SPIN_VARIABLE_CUSTOMER_DB_URL", &full.app.customer_db.url);
        if let Some(key) = key {
            cmd.env("AUDIT_SEAL_KEY", key);
        }
        integration_tests::run_admin(cmd, args)
    };
    let new_key = run(&["audit", "new-key"], None).await;
    let key = String::from_utf8_lossy(&new_key.stdout).trim().to_string();
    assert!(SealKey::parse(&key).is_ok(), "{key}");

    let missing = run(&["audit", "verify"], None).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Failed to find AUDIT_SEAL_KEY"));

    let young = run(&["audit", "seal"], Some(key.clone())).await;
    let young = String::from_utf8_lossy(&young.stdout).into_owned();
    assert!(young.contains("auth: sealed 0 row(s)") && young.contains("customer: sealed 0 row(s)"), "rows younger than 5 minutes wait: {young}");
    let sealed = run(&["audit", "seal", "--margin-secs", "0", "--json"], Some(key.clone())).await;
    assert!(sealed.status.success());
    let reports: serde_json::Value = serde_json::from_slice(&sealed.stdout).expect("JSON");
    assert_eq!(reports.as_array().map(Vec::len), Some(2), "{reports}");
    assert!(reports[0]["sealed_now"].as_u64().is_some_and(|n| n > 0) && reports[0]["head"]["head"].as_str().is_some_and(|h| h.len() == 64), "{reports}");
    let fine = run(&["audit", "verify"], Some(key.clone())).await;
    assert!(fine.status.success(), "{}", String::from_utf8_lossy(&fine.stderr));
    assert!(String::from_utf8_lossy(&fine.stdout).contains("sealed row(s) verify"));

    db_rows(&full.app.customer_db, "UPDATE audit_log SET actor = 'someone else' ORDER BY id LIMIT 1").await;
    let broken = run(&["audit", "verify"], Some(key.clone())).await;
    assert_eq!(broken.status.code(), Some(2));
    let text = String::from_utf8_lossy(&broken.stdout).into_owned();
    assert!(text.contains("customer: 1 problem(s)") && text.contains("its content or its seal was changed"), "{text}");
    assert!(String::from_utf8_lossy(&broken.stderr).contains("the audit log of customer does not verify"));
    assert!(!String::from_utf8_lossy(&broken.stderr).contains(&key), "the key is never printed");
}
