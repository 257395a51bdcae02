//! The legacy upgrade (customer migration 6) end to end, on MariaDB, as docs/upgrade.md tells an
//! operator to run it.
//!
//! A legacy customer database (schema version 5) is seeded with 10,000 customers (names with
//! accents and emoji, mixed-case emails, some sealed un-normalized as a legacy service may have),
//! and auth with most of them, some free users, and deliberate conflicts. Then:
//! conflicts reported exactly (nothing written, nothing guessed) → migration 6 refused →
//! the operator resolves the conflicts → backfill killed half-way and run again (no duplicates) →
//! verify → 6 up → verify → 6 down (names and emails repopulated from auth) → re-encryption after
//! a key rotation → 6 up. The (id, name, email) of every customer is identical at each step.
//! The same suite runs with both databases on one server and on two separate servers.
//!
//! Needs the stack's MariaDB (`scripts/stack.sh up`; DB_ADMIN_URL from the environment or
//! .local/stack.env), `mariadbd` for the second server, and the admin binary at
//! target/native/admin (`cargo build --profile native -p admin`, or test with `-p admin`; override
//! with ADMIN_BIN). UPGRADE_ROWS changes the number of customers (default 10,000).

use std::collections::{BTreeMap, HashMap};
use std::process::Output;
use std::time::{Duration, Instant};

use admin::legacy::{ConflictKind, CrossDb};
use admin::migrate::{self, Options, Service};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use integration_tests::mariadb::PrivateMariaDb;
use integration_tests::TestDatabase;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};
use sealed_email::{EmailKeyring, normalize_email};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------------------------------------
// Keys and sealing

struct Key {
    kid: &'static str,
    bytes: [u8; 32],
}

impl Key {
    fn new(kid: &'static str) -> Key {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Key { kid, bytes }
    }

    fn entry(&self) -> String {
        format!("{}:{}", self.kid, STANDARD.encode(self.bytes))
    }

    /// Seals any text (even an un-normalized address) in sealed-email's v1 format, computed here
    /// independently: HKDF-SHA256 sub-key, AES-256-GCM, AAD `v1.<kid>.<id>`.
    fn seal_raw(&self, plain: &str, id: &str) -> String {
        let hk = hkdf::Hkdf::<Sha256>::new(None, &self.bytes);
        let mut enc = [0u8; 32];
        hk.expand(b"sealed-email/v1/aes-256-gcm", &mut enc).unwrap();
        let cipher = Aes256Gcm::new_from_slice(&enc).unwrap();
        let nonce: [u8; 12] = uuid::Uuid::new_v4().as_bytes()[..12].try_into().unwrap();
        let aad = format!("v1.{}.{id}", self.kid);
        let ct = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
            .unwrap();
        let mut blob = nonce.to_vec();
        blob.extend(ct);
        format!("v1.{}.{}", self.kid, URL_SAFE_NO_PAD.encode(blob))
    }
}

fn ring(var: &str) -> EmailKeyring {
    EmailKeyring::parse(var).unwrap()
}

// ------------------------------------------------------------------------------------------------
// Databases

enum Layout {
    OneServer,
    TwoServers,
}

struct World {
    auth: TestDatabase,
    customer: TestDatabase,
    /// The second server (two-server layout); dropped after the databases on it.
    _second: Option<PrivateMariaDb>,
}

impl World {
    async fn new(layout: &Layout) -> World {
        let (auth, second) = match layout {
            Layout::OneServer => (TestDatabase::create("upg_auth").await.unwrap(), None),
            Layout::TwoServers => {
                let server = PrivateMariaDb::start().await.unwrap();
                (TestDatabase::create_on(&server.admin_url(), "upg_auth").await.unwrap(), Some(server))
            }
        };
        let customer = TestDatabase::create("upg_cust").await.unwrap();
        migrate::up(&auth.url, Service::Auth.migrator(), Options::default()).await.unwrap();
        // The legacy customer service's schema.
        migrate::up(&customer.url, Service::Customer.migrator(), to(5)).await.unwrap();
        World { auth, customer, _second: second }
    }

    fn cross(&self, key_var: &str) -> CrossDb {
        CrossDb::new(Some(&self.auth.url), Some(&self.customer.url), Some(key_var)).with_batch_size(300)
    }
}

fn to(v: i64) -> Options {
    Options { to: Some(v), ..Default::default() }
}

async fn insert_many(conn: &mut mysql_async::Conn, head: &str, row: &str, rows: Vec<Vec<Value>>) {
    for chunk in rows.chunks(500) {
        let sql = format!("{head} {}", vec![row; chunk.len()].join(", "));
        let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
        conn.exec_drop(sql, Params::Positional(params)).await.unwrap();
    }
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
    let v: Option<i64> = conn.query_first(sql).await.unwrap();
    conn.disconnect().await.ok();
    v.unwrap_or(0)
}

// ------------------------------------------------------------------------------------------------
// The seed

const NAMES: [&str; 10] = [
    "José Álvarez",
    "Zoë Müller 🦀",
    "Łukasz Żółć",
    "Björk Guðmundsdóttir",
    "李小龙",
    "Renée O'Connor 🎉",
    "Ñandú 👩‍💻",
    "Søren Kierkegaard",
    "Chloé d'Artagnan",
    "Ana María Núñez 🌮",
];
const LOCALS: [&str; 8] = ["Jose.Alvarez", "Zoë.Müller", "lukasz.ZOLC", "Bjork.G", "li.XiaoLong", "Renee.OConnor", "NANDU", "chloe"];
const DOMAINS: [&str; 4] = ["Example.COM", "MAIL.example.org", "Exämple.de", "example.NET"];
const FREE_USERS: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    InAuth,
    Missing,
    EmailDiffers,
    NameDiffers,
    EmailTaken,
    Unreadable,
    Duplicate,
    NameInvalid,
}

fn role(i: usize) -> Role {
    match i {
        0..10 => Role::EmailDiffers,
        10..20 => Role::NameDiffers,
        20..30 => Role::EmailTaken,
        30..35 => Role::Unreadable,
        35..41 => Role::Duplicate,
        41..43 => Role::NameInvalid,
        _ if i % 10 < 7 => Role::InAuth,
        _ => Role::Missing,
    }
}

struct Customer {
    i: usize,
    id: String,
    name: String,
    /// As the legacy service stored it (mixed case).
    raw_email: String,
    role: Role,
}

struct Seed {
    customers: Vec<Customer>,
    expected_conflicts: BTreeMap<String, ConflictKind>,
    expected_missing: usize,
}

fn people(n: usize) -> Vec<Customer> {
    (0..n)
        .map(|i| {
            let role = role(i);
            let name = match (role, i) {
                (Role::NameInvalid, 41) => format!("Trailing Space {i} "),
                (Role::NameInvalid, _) => format!("Bell\u{7} {i}"),
                _ => format!("{} {i}", NAMES[i % NAMES.len()]),
            };
            let raw_email = match role {
                // Pairs (35,36), (37,38), (39,40): one address, spelled in two cases.
                Role::Duplicate if i % 2 == 1 => format!("Dup.{i}@Example.com"),
                Role::Duplicate => format!("dup.{}@EXAMPLE.com", i - 1),
                _ => format!("{}+{i}@{}", LOCALS[i % LOCALS.len()], DOMAINS[(i / 3) % DOMAINS.len()]),
            };
            Customer { i, id: uuid::Uuid::new_v4().to_string(), name, raw_email, role }
        })
        .collect()
}

async fn seed(world: &World, key: &Key, n: usize) -> Seed {
    let keyring = ring(&key.entry());
    let wrong = Key::new(key.kid); // same kid, another key: does not open
    let customers = people(n);
    let mut legacy_rows = Vec::new();
    let mut auth_rows = Vec::new();
    let mut expected_conflicts = BTreeMap::new();
    let mut expected_missing = 0;
    let auth_row = |id: &str, name: &str, email: &str, created: i64| -> Vec<Value> {
        let e = normalize_email(email).unwrap();
        vec![
            id.into(),
            name.into(),
            keyring.seal_with_aad(&e, id.as_bytes()).into(),
            keyring.blind_index(&e).into(),
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA".into(),
            created.into(),
        ]
    };
    for c in &customers {
        let created = 1_500_000_000 + (c.i as i64) * 61;
        let email_encrypted = match c.role {
            Role::Unreadable => wrong.seal_raw(&c.raw_email, &c.id),
            // Half the legacy values hold the address as typed, half normalized.
            _ if c.i % 2 == 0 => key.seal_raw(&c.raw_email, &c.id),
            _ => keyring.seal_with_aad(&normalize_email(&c.raw_email).unwrap(), c.id.as_bytes()),
        };
        legacy_rows.push(vec![
            c.id.as_str().into(),
            c.name.as_str().into(),
            email_encrypted.into(),
            format!("cus_{:06}", c.i).into(),
            created.into(),
        ]);
        match c.role {
            Role::InAuth => auth_rows.push(auth_row(&c.id, &c.name, &c.raw_email, created)),
            Role::Missing => expected_missing += 1,
            Role::EmailDiffers => {
                auth_rows.push(auth_row(&c.id, &c.name, &format!("changed+{}@example.org", c.i), created));
                expected_conflicts.insert(c.id.clone(), ConflictKind::EmailDiffers);
            }
            Role::NameDiffers => {
                auth_rows.push(auth_row(&c.id, &format!("Renamed {}", c.i), &c.raw_email, created));
                expected_conflicts.insert(c.id.clone(), ConflictKind::NameDiffers);
            }
            Role::EmailTaken => {
                auth_rows.push(auth_row(&format!("stray-{}", c.i), "Stray Duplicate", &c.raw_email, created));
                expected_conflicts.insert(c.id.clone(), ConflictKind::EmailTaken);
            }
            Role::Unreadable => {
                expected_conflicts.insert(c.id.clone(), ConflictKind::LegacyEmailUnreadable);
            }
            Role::Duplicate => {
                expected_conflicts.insert(c.id.clone(), ConflictKind::DuplicateLegacyEmail);
            }
            Role::NameInvalid => {
                expected_conflicts.insert(c.id.clone(), ConflictKind::LegacyNameInvalid);
            }
        }
    }
    for j in 0..FREE_USERS {
        auth_rows.push(auth_row(&format!("free-{j:04}"), &format!("Free Ünïcode {j} ✨"), &format!("Free{j}@Example.org"), 1_600_000_000));
    }
    let mut conn = world.customer.connect().await.unwrap();
    insert_many(
        &mut conn,
        "INSERT INTO customers (id, name, email_encrypted, stripe_customer_id, created_at) VALUES",
        "(?, ?, ?, ?, FROM_UNIXTIME(?))",
        legacy_rows,
    )
    .await;
    conn.disconnect().await.ok();
    let mut conn = world.auth.connect().await.unwrap();
    insert_many(
        &mut conn,
        "INSERT INTO client_auth (id, name, email_encrypted, email_hash, password_hash, created_at) VALUES",
        "(?, ?, ?, ?, ?, FROM_UNIXTIME(?))",
        auth_rows,
    )
    .await;
    conn.disconnect().await.ok();
    Seed { customers, expected_conflicts, expected_missing }
}

/// What an operator decides for each conflict (docs/upgrade.md, "Conflicts"), except a changed
/// email or name, where auth's newer record wins (`backfill --auth-wins`): a stray auth account
/// holding a customer's email is removed; a value sealed with a lost key is sealed again once the
/// key is found; duplicates and names auth refuses are corrected in the legacy table.
async fn resolve_conflicts(world: &World, key: &Key, seed: &Seed) {
    let keyring = ring(&key.entry());
    let mut cust = world.customer.connect().await.unwrap();
    let mut auth = world.auth.connect().await.unwrap();
    for c in &seed.customers {
        let set = |name: &str, email: &str| {
            (name.to_owned(), keyring.seal_with_aad(&normalize_email(email).unwrap(), c.id.as_bytes()))
        };
        let update = match c.role {
            Role::EmailTaken => {
                auth.exec_drop("DELETE FROM client_auth WHERE id = ?", (format!("stray-{}", c.i),)).await.unwrap();
                None
            }
            Role::Unreadable => Some(set(&c.name, &c.raw_email)),
            Role::Duplicate if c.i % 2 == 0 => Some(set(&c.name, &format!("dup.{}.second@example.com", c.i))),
            Role::NameInvalid => Some(set(&format!("Fixed Name {}", c.i), &c.raw_email)),
            _ => None,
        };
        if let Some((name, sealed)) = update {
            cust.exec_drop("UPDATE customers SET name = ?, email_encrypted = ? WHERE id = ?", (name, sealed, c.id.as_str()))
                .await
                .unwrap();
        }
    }
    cust.disconnect().await.ok();
    auth.disconnect().await.ok();
}

// ------------------------------------------------------------------------------------------------
// Checksums of (id, name, email)

type Identity = (String, String, String);

/// The identities once `--auth-wins` has replaced the changed legacy copies with auth's records.
fn with_auth_winning(mut legacy: Vec<Identity>, seed: &Seed) -> Vec<Identity> {
    let by_id: HashMap<&str, &Customer> = seed.customers.iter().map(|c| (c.id.as_str(), c)).collect();
    for (id, name, email) in &mut legacy {
        match by_id[id.as_str()] {
            c if c.role == Role::EmailDiffers => *email = format!("changed+{}@example.org", c.i),
            c if c.role == Role::NameDiffers => *name = format!("Renamed {}", c.i),
            _ => {}
        }
    }
    legacy
}

/// From the legacy columns of `customers` (emails opened with the id as context, normalized).
async fn legacy_identities(world: &World, keyring: &EmailKeyring) -> Vec<Identity> {
    let mut conn = world.customer.connect().await.unwrap();
    let rows: Vec<(String, String, String)> = conn.query("SELECT id, name, email_encrypted FROM customers").await.unwrap();
    conn.disconnect().await.ok();
    let mut out: Vec<Identity> = rows
        .into_iter()
        .map(|(id, name, sealed)| {
            let plain = keyring
                .open_with_aad(&sealed, id.as_bytes())
                .unwrap_or_else(|e| panic!("legacy email of {id} does not open: {e}"));
            let email = normalize_email(&plain).unwrap().into_string();
            (id, name, email)
        })
        .collect();
    out.sort();
    out
}

/// Every customer id with auth's name and email for it.
async fn auth_identities(world: &World, keyring: &EmailKeyring) -> Vec<Identity> {
    let mut conn = world.customer.connect().await.unwrap();
    let ids: Vec<String> = conn.query("SELECT id FROM customers").await.unwrap();
    conn.disconnect().await.ok();
    let mut conn = world.auth.connect().await.unwrap();
    let rows: Vec<(String, String, String)> = conn.query("SELECT id, name, email_encrypted FROM client_auth").await.unwrap();
    conn.disconnect().await.ok();
    let auth: HashMap<String, (String, String)> = rows.into_iter().map(|(id, n, e)| (id, (n, e))).collect();
    let mut out: Vec<Identity> = ids
        .into_iter()
        .map(|id| {
            let (name, sealed) = auth.get(&id).unwrap_or_else(|| panic!("customer {id} has no auth record"));
            let email = keyring
                .open_with_aad(sealed, id.as_bytes())
                .unwrap_or_else(|e| panic!("auth email of {id} does not open: {e}"));
            (id.clone(), name.clone(), email)
        })
        .collect();
    out.sort();
    out
}

fn checksum(v: &[Identity]) -> String {
    let mut h = Sha256::new();
    for (id, name, email) in v {
        h.update(id.as_bytes());
        h.update([0]);
        h.update(name.as_bytes());
        h.update([0]);
        h.update(email.as_bytes());
        h.update([b'\n']);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_same(step: &str, base: &[Identity], now: &[Identity]) {
    if checksum(base) != checksum(now) {
        let first = base.iter().zip(now).find(|(a, b)| a != b);
        panic!(
            "{step}: (id, name, email) checksum changed ({} rows before, {} now); first difference: {first:?}",
            base.len(),
            now.len()
        );
    }
}

async fn client_auth_rows(world: &World) -> Vec<String> {
    let mut conn = world.auth.connect().await.unwrap();
    let rows: Vec<String> = conn
        .query(
            "SELECT CONCAT_WS('|', id, name, email_encrypted, email_hash, IFNULL(password_hash, '-'), \
             must_reset_password, UNIX_TIMESTAMP(created_at)) FROM client_auth ORDER BY id",
        )
        .await
        .unwrap();
    conn.disconnect().await.ok();
    rows
}

async fn customer_columns(world: &World) -> Vec<String> {
    let mut conn = world.customer.connect().await.unwrap();
    let cols: Vec<String> = conn
        .query(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'customers' ORDER BY ORDINAL_POSITION",
        )
        .await
        .unwrap();
    conn.disconnect().await.ok();
    cols
}

// ------------------------------------------------------------------------------------------------
// The admin binary

fn admin_command(world: &World, key_var: &str, args: &[&str], cwd: &std::path::Path) -> tokio::process::Command {
    let mut cmd = integration_tests::admin_command(args, cwd);
    cmd.env("SPIN_VARIABLE_AUTH_DB_URL", &world.auth.url)
        .env("SPIN_VARIABLE_CUSTOMER_DB_URL", &world.customer.url)
        .env("SPIN_VARIABLE_ENCRYPTION_KEY", key_var);
    cmd
}

async fn admin(world: &World, key_var: &str, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    integration_tests::run_admin(admin_command(world, key_var, args, cwd.path()), args).await
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Starts `admin backfill` slowly and kills it (SIGKILL) once it has copied about a third of what
/// it has to copy; returns how many users it copied.
async fn backfill_killed_half_way(world: &World, key_var: &str, before: i64, to_copy: i64) -> i64 {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = admin_command(world, key_var, &["backfill", "--auth-wins", "--batch-size", "50", "--pause-ms", "40"], cwd.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = scalar(&world.auth.url, "SELECT COUNT(*) FROM client_auth").await;
        if now - before >= to_copy / 3 {
            child.start_kill().unwrap();
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("backfill finished ({status}) before it could be killed");
        }
        assert!(Instant::now() < deadline, "backfill made no progress");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed");
    scalar(&world.auth.url, "SELECT COUNT(*) FROM client_auth").await - before
}

// ------------------------------------------------------------------------------------------------
// The suite

fn rows_wanted() -> usize {
    std::env::var("UPGRADE_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000).max(100)
}

async fn suite(layout: Layout) {
    let t0 = Instant::now();
    let lap = |what: &str, since: &mut Instant| {
        eprintln!("[{:>6.2} s] {what}", since.elapsed().as_secs_f64());
        *since = Instant::now();
    };
    let mut t = Instant::now();
    let world = World::new(&layout).await;
    let k1 = Key::new("k1");
    let key_var = k1.entry();
    let keyring = ring(&key_var);
    let n = rows_wanted();
    let seed = seed(&world, &k1, n).await;
    lap(&format!("seeded {n} legacy customers and {} auth users", scalar(&world.auth.url, "SELECT COUNT(*) FROM client_auth").await), &mut t);

    // 1. Conflicts are reported exactly, and nothing is written.
    let auth_before = client_auth_rows(&world).await;
    let report = admin::backfill::run(&world.cross(&key_var), Default::default()).await.unwrap();
    lap("backfill (conflicts)", &mut t);
    assert!(!report.wrote);
    let found: BTreeMap<String, ConflictKind> = report.conflicts.iter().map(|c| (c.id.clone(), c.kind)).collect();
    assert_eq!(found, seed.expected_conflicts, "conflicts reported");
    assert_eq!(report.not_copied as usize, seed.expected_missing);
    assert_eq!(report.checked as usize, n);
    assert_eq!(client_auth_rows(&world).await, auth_before, "a backfill with conflicts writes nothing");
    let taken: Vec<_> = report.conflicts.iter().filter(|c| c.kind == ConflictKind::EmailTaken).collect();
    assert!(taken.iter().all(|c| c.other_id.as_deref().is_some_and(|o| o.starts_with("stray-"))));

    // The binary says the same, with exit status 2.
    let out = admin(&world, &key_var, &["backfill", "--dry-run", "--json"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)["conflicts"].as_array().unwrap().len(), seed.expected_conflicts.len());

    // 2. verify fails, and migration 6 refuses (with and without auth access).
    let v = admin::verify::run(&world.cross(&key_var)).await.unwrap();
    assert!(!v.ok);
    let not_in_auth = seed.expected_missing
        + seed.customers.iter().filter(|c| matches!(c.role, Role::EmailTaken | Role::Unreadable | Role::Duplicate | Role::NameInvalid)).count();
    assert_eq!(v.count("customer_without_auth") as usize, not_in_auth);
    assert_eq!(v.count("legacy_email_differs"), 10);
    assert_eq!(v.count("legacy_name_differs"), 10);
    assert_eq!(v.count("legacy_email_unreadable"), 5);
    assert_eq!(v.count("blind_index_mismatch"), 0);
    let err = migrate::up_with(&world.customer.url, Service::Customer.migrator(), Options::default(), &world.cross(&key_var))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("Refusing to apply customer migration 6"), "{msg}");
    assert!(msg.contains("email_differs") && msg.contains("missing_from_auth"), "{msg}");
    let err = migrate::up(&world.customer.url, Service::Customer.migrator(), Options::default()).await.unwrap_err();
    assert!(format!("{err:#}").contains("SPIN_VARIABLE_ENCRYPTION_KEY"), "{err:#}");
    assert_eq!(scalar(&world.customer.url, "SELECT MAX(version) FROM _sqlx_migrations WHERE success").await, 5);
    lap("verify + refused migration 6", &mut t);

    // 3. The operator resolves every conflict (auth wins the changed ones, below); from here on
    //    nothing may change.
    resolve_conflicts(&world, &k1, &seed).await;
    let dry = admin::backfill::run(&world.cross(&key_var), admin::backfill::Options { dry_run: true, auth_wins: true, ..Default::default() })
        .await
        .unwrap();
    assert!(dry.conflicts.is_empty(), "{:?}", dry.conflicts);
    assert_eq!(dry.legacy_updated_from_auth.len(), 20);
    let base = with_auth_winning(legacy_identities(&world, &keyring).await, &seed);
    assert_eq!(base.len(), n);
    eprintln!("checksum of {n} (id, name, email): {}", checksum(&base));

    // 4. Backfill, killed half-way, then run again: finishes without duplicates.
    let before = scalar(&world.auth.url, "SELECT COUNT(*) FROM client_auth").await;
    let to_copy = (n - (seed.customers.iter().filter(|c| matches!(c.role, Role::InAuth | Role::EmailDiffers | Role::NameDiffers)).count())) as i64;
    let copied_before_kill = backfill_killed_half_way(&world, &key_var, before, to_copy).await;
    assert!(copied_before_kill > 0 && copied_before_kill < to_copy, "killed half-way: {copied_before_kill} of {to_copy}");
    lap(&format!("backfill killed after copying {copied_before_kill} of {to_copy}"), &mut t);
    let out = admin(&world, &key_var, &["backfill", "--json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let r = json(&out);
    assert_eq!(r["copied"].as_i64().unwrap(), to_copy - copied_before_kill);
    assert_eq!(r["already_in_auth"].as_i64().unwrap(), n as i64 - (to_copy - copied_before_kill));
    lap("backfill rerun", &mut t);
    let (rows, ids, hashes): (i64, i64, i64) = {
        let mut conn = world.auth.connect().await.unwrap();
        let v = conn
            .query_first("SELECT COUNT(*), COUNT(DISTINCT id), COUNT(DISTINCT email_hash) FROM client_auth")
            .await
            .unwrap()
            .unwrap();
        conn.disconnect().await.ok();
        v
    };
    assert_eq!((rows, ids, hashes), (before + to_copy, before + to_copy, before + to_copy), "no duplicates");
    let reset = scalar(&world.auth.url, "SELECT COUNT(*) FROM client_auth WHERE password_hash IS NULL AND must_reset_password = 1").await;
    assert_eq!(reset, to_copy, "backfilled users have no password and must reset it");
    let kept = scalar(
        &world.auth.url,
        "SELECT COUNT(*) FROM client_auth WHERE must_reset_password = 1 AND UNIX_TIMESTAMP(created_at) BETWEEN 1500000000 AND 1500000000 + 61 * 20000",
    )
    .await;
    assert_eq!(kept, to_copy, "backfilled users keep the customer's created_at");
    assert_same("after backfill (auth's copy)", &base, &auth_identities(&world, &keyring).await);
    assert_same("after backfill (legacy copy)", &base, &legacy_identities(&world, &keyring).await);

    // 5. verify → 6 up → verify.
    let out = admin(&world, &key_var, &["verify", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "verify after backfill");
    let r = json(&out);
    assert_eq!(r["ok"], true);
    assert_eq!(r["legacy_identity_columns"], true);
    assert_eq!(r["info"]["must_reset_password"].as_i64().unwrap(), to_copy);
    lap("verify (legacy schema)", &mut t);
    let out = admin(&world, &key_var, &["migrate", "up", "--service", "customer"]).await;
    assert!(out.status.success(), "migrate up");
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied 6 normalize customers"));
    assert_eq!(customer_columns(&world).await, ["id", "stripe_customer_id", "created_at", "updated_at"]);
    assert_same("after migration 6", &base, &auth_identities(&world, &keyring).await);
    lap("migrate up (guard + 6..12)", &mut t);
    let out = admin(&world, &key_var, &["verify"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verify: OK"));
    lap("verify (normalized schema)", &mut t);

    // 6. Rollback: 6 down repopulates name and email from auth, in auth's sealed format.
    let out = admin(&world, &key_var, &["migrate", "down", "--service", "customer", "--to", "5"]).await;
    assert!(out.status.success(), "migrate down");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("repopulated the name and email of {n} customers")));
    assert_eq!(
        customer_columns(&world).await,
        ["id", "name", "email_encrypted", "stripe_customer_id", "created_at", "updated_at", "sync_version", "last_sync_at"]
    );
    assert_same("after migration 6 down", &base, &legacy_identities(&world, &keyring).await);
    assert_eq!(scalar(&world.customer.url, "SELECT COUNT(*) FROM customers WHERE email_encrypted NOT LIKE 'v1.k1.%'").await, 0);
    lap("migrate down --to 5 (repopulate)", &mut t);
    let v = admin::verify::run(&world.cross(&key_var)).await.unwrap();
    assert!(v.ok, "verify after rollback: {:?}", v.problems().collect::<Vec<_>>());

    // 7. Key rotation (k2 prepended) and re-encryption of both copies.
    let k2 = Key::new("k2");
    let rotated = format!("{},{}", k2.entry(), k1.entry());
    let rotated_ring = ring(&rotated);
    let r = admin::reencrypt::run(&world.cross(&rotated), admin::reencrypt::Target::All, false).await.unwrap();
    let total_auth = before + to_copy;
    assert_eq!(r.tables.len(), 2, "client_auth and the legacy customers");
    assert_eq!(r.tables[0].resealed as i64, total_auth);
    assert_eq!(r.tables[1].resealed as usize, n);
    for t in &r.tables {
        assert_eq!(t.sealed_by_kid, BTreeMap::from([("k2".to_owned(), t.checked)]), "{}", t.table);
        assert_eq!(t.unreadable, 0);
    }
    let again = admin::reencrypt::run(&world.cross(&rotated), admin::reencrypt::Target::All, false).await.unwrap();
    assert!(again.tables.iter().all(|t| t.resealed == 0), "a second run has nothing to do");
    assert_same("after re-encryption (legacy copy)", &base, &legacy_identities(&world, &rotated_ring).await);
    assert_same("after re-encryption (auth's copy)", &base, &auth_identities(&world, &rotated_ring).await);
    let v = admin::verify::run(&world.cross(&rotated)).await.unwrap();
    assert!(v.ok && v.info.not_sealed_with_active_key == 0, "{:?}", v.problems().collect::<Vec<_>>());
    lap("reencrypt (k1 → k2) both tables", &mut t);

    // 8. 6 up again (with the rotated key).
    let out = admin(&world, &rotated, &["migrate", "up", "--service", "customer"]).await;
    assert!(out.status.success(), "migrate up again");
    assert_same("after migration 6 again", &base, &auth_identities(&world, &rotated_ring).await);
    let v = admin::verify::run(&world.cross(&rotated)).await.unwrap();
    assert!(v.ok);
    lap("migrate up again + verify", &mut t);
    eprintln!("suite total {:.1} s", t0.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_upgrade_with_both_services_on_one_server() {
    suite(Layout::OneServer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_upgrade_with_the_services_on_two_servers() {
    suite(Layout::TwoServers).await;
}

/// The explicit escape hatch, refusals that change nothing, and a cut-short rollback finished by
/// running `down` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_refusals_change_nothing_and_allow_data_loss_is_explicit() {
    let world = World::new(&Layout::OneServer).await;
    let k1 = Key::new("k1");
    let key_var = k1.entry();
    let keyring = ring(&key_var);
    let seed = seed(&world, &k1, 100).await;
    let migrator = Service::Customer.migrator();
    let cross = world.cross(&key_var);
    let not_in_auth: Vec<&Customer> = seed.customers.iter().filter(|c| !matches!(c.role, Role::InAuth | Role::EmailDiffers | Role::NameDiffers)).collect();

    // An empty legacy table needs nothing: a fresh install migrates with plain `up`.
    let fresh = TestDatabase::create("upg_fresh").await.unwrap();
    migrate::up(&fresh.url, migrator, to(5)).await.unwrap();
    let out = migrate::up(&fresh.url, migrator, Options::default()).await.unwrap();
    assert!(out.applied.iter().any(|s| s.version == 6));
    migrate::down(&fresh.url, migrator, to(5)).await.unwrap();

    // --allow-data-loss applies 6 over unresolved rows.
    migrate::up_with(&world.customer.url, migrator, Options::default(), &cross.clone().with_allow_data_loss(true)).await.unwrap();
    assert_eq!(customer_columns(&world).await.len(), 4);

    // Reverting needs auth once there are rows; refusals revert nothing.
    let at = |url: String| async move { scalar(&url, "SELECT MAX(version) FROM _sqlx_migrations WHERE success").await };
    let latest = migrator.iter().map(|m| m.version).max().expect("customer migrations");
    let err = migrate::down(&world.customer.url, migrator, to(5)).await.unwrap_err();
    assert!(format!("{err:#}").contains("SPIN_VARIABLE_ENCRYPTION_KEY"), "{err:#}");
    assert_eq!(at(world.customer.url.clone()).await, latest);
    let err = migrate::down_with(&world.customer.url, migrator, to(5), &cross).await.unwrap_err();
    assert!(format!("{err:#}").contains("Refusing to revert customer migration 6"), "{err:#}");
    assert_eq!(at(world.customer.url.clone()).await, latest);

    // With the flag: the customers auth holds are repopulated, the others stay empty.
    migrate::down_with(&world.customer.url, migrator, to(5), &cross.clone().with_allow_data_loss(true)).await.unwrap();
    let empty = scalar(&world.customer.url, "SELECT COUNT(*) FROM customers WHERE name = '' AND email_encrypted = ''").await;
    assert_eq!(empty as usize, not_in_auth.len());
    let v = admin::verify::run(&cross).await.unwrap();
    assert_eq!(v.count("legacy_identity_empty") as usize, not_in_auth.len());
    assert_eq!(v.count("customer_without_auth") as usize, not_in_auth.len());

    // A rollback cut short (simulated: two filled rows emptied again) is finished by `down`.
    let mut conn = world.customer.connect().await.unwrap();
    let some: Vec<String> = conn.query("SELECT id FROM customers WHERE email_encrypted <> '' ORDER BY id LIMIT 2").await.unwrap();
    for id in &some {
        conn.exec_drop("UPDATE customers SET name = '', email_encrypted = '' WHERE id = ?", (id,)).await.unwrap();
    }
    conn.disconnect().await.ok();
    let out = migrate::down_with(&world.customer.url, migrator, to(5), &cross).await.unwrap();
    assert!(out.reverted.is_empty());
    let empty_now = scalar(&world.customer.url, "SELECT COUNT(*) FROM customers WHERE email_encrypted = ''").await;
    assert_eq!(empty_now, empty, "the two rows were filled again");
    let filled = legacy_identities_where_filled(&world, &keyring).await;
    assert!(some.iter().all(|id| filled.contains_key(id)));

    // Re-index: retire the blind-index root k1 for a new keyring rooted at k9.
    let k9 = Key::new("k9");
    let new_var = k9.entry();
    let r = admin::reencrypt::run_with(&cross, admin::reencrypt::Target::All, false, Some(&new_var)).await.unwrap();
    assert_eq!(r.reindexed_to.as_deref(), Some("k9"));
    let auth_rows = scalar(&world.auth.url, "SELECT COUNT(*) FROM client_auth").await as u64;
    assert_eq!(r.tables[0].resealed, auth_rows);
    let v = admin::verify::run(&world.cross(&new_var)).await.unwrap();
    assert_eq!((v.count("auth_email_unreadable"), v.count("blind_index_mismatch")), (0, 0), "auth opens and is indexed under k9 only");
    let again = admin::reencrypt::run_with(&cross, admin::reencrypt::Target::All, false, Some(&new_var)).await.unwrap();
    assert!(again.tables.iter().all(|t| t.resealed == 0 && t.current + t.unreadable <= t.checked));
    let refilled = legacy_identities_where_filled(&world, &ring(&new_var)).await;
    assert_eq!(refilled, filled, "the legacy copies open with the new keyring, unchanged");
}

async fn legacy_identities_where_filled(world: &World, keyring: &EmailKeyring) -> HashMap<String, String> {
    let mut conn = world.customer.connect().await.unwrap();
    let rows: Vec<(String, String)> =
        conn.query("SELECT id, email_encrypted FROM customers WHERE email_encrypted <> ''").await.unwrap();
    conn.disconnect().await.ok();
    rows.into_iter()
        .map(|(id, sealed)| {
            let email = keyring.open_with_aad(&sealed, id.as_bytes()).unwrap();
            (id, email)
        })
        .collect()
}

/// Not a test: leaves a seeded legacy pair (1,000 customers, with the conflicts above) on the
/// stack's MariaDB to rehearse docs/upgrade.md by hand. Prints the settings to export; drop the
/// two databases afterwards. `cargo test --profile native -p integration-tests --test
/// upgrade_legacy -- --ignored --nocapture rehearsal`
#[tokio::test]
#[ignore]
async fn rehearsal() {
    let world = World::new(&Layout::OneServer).await;
    let k1 = Key::new("k1");
    seed(&world, &k1, 1000).await;
    println!("export SPIN_VARIABLE_AUTH_DB_URL='{}'", world.auth.url);
    println!("export SPIN_VARIABLE_CUSTOMER_DB_URL='{}'", world.customer.url);
    println!("export SPIN_VARIABLE_ENCRYPTION_KEY='{}'", k1.entry());
    println!("# afterwards: DROP DATABASE `{}`; DROP DATABASE `{}`;", world.auth.name, world.customer.name);
    std::mem::forget(world);
}
