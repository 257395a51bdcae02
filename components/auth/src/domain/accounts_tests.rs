use sealed_email::EmailKeyring;
use tokens::{AccessTokenConfig, SigningKeys};

use super::*;
use crate::domain::fields::{Name, parse_email};
use crate::domain::memory::MemoryStore;
use crate::domain::ports::SessionOrigin;

const NOW: u64 = 1_800_000_000;

fn crypto() -> Crypto {
    Crypto {
        email: EmailKeyring::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key"),
        signing: SigningKeys::parse("s1:AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key"),
        access: AccessTokenConfig::new(tokens::ACCESS_TOKEN_ISSUER, tokens::ACCESS_TOKEN_AUDIENCE),
    }
}

fn ctx(now: u64) -> Ctx {
    Ctx { now, now_ms: now * 1000, client_addr: "192.0.2.1".into(), user_agent: Some("test-agent/1.0".into()) }
}

fn registration(email: &str, password: &str) -> Registration {
    Registration {
        name: Name::parse("name", "Ada Lovelace").expect("name"),
        email: parse_email("email", email).expect("email"),
        password: Password::new_secret(password).expect("password"),
    }
}

fn credentials(email: &str, password: &str) -> Credentials {
    Credentials { email: parse_email("email", email).expect("email"), password: Password::presented(password), second_factor: None }
}

fn setup() -> (MemoryStore, Crypto, Settings, Session) {
    let mut store = MemoryStore::default();
    let crypto = crypto();
    let settings = Settings::default();
    let session = register(&mut store, &crypto, &settings, &ctx(NOW), registration("Ada@Example.org", "analytical-engine-1843")).expect("registered");
    (store, crypto, settings, session)
}

#[test]
fn register_stores_sealed_email_and_blind_index_and_returns_tokens() {
    let (store, crypto, _, session) = setup();
    assert_eq!(session.user.email, "ada@example.org");
    assert_eq!(session.user.name, "Ada Lovelace");
    assert_eq!(session.access.expires_in, 900);
    let row = &store.state.users[&session.user.id];
    assert!(row.email_encrypted.starts_with("v1.k1."));
    // Not the plaintext ("ada" alone may turn up in a random ciphertext by chance).
    assert!(!row.email_encrypted.contains("example.org"));
    assert_eq!(row.email_hash, crypto.email.blind_index(&parse_email("e", "ada@example.org").expect("email")));
    assert!(row.password_hash.as_deref().is_some_and(|h| h.starts_with("$argon2id$")));
    let claims = crypto.signing.verifier().verify_access_token(&session.access.token, &crypto.access, NOW).expect("valid");
    assert_eq!(claims.subject, session.user.id);
    assert_eq!(claims.issuer, tokens::ACCESS_TOKEN_ISSUER);
    assert_eq!(store.events(), vec![("register", true, None)]);
}

/// A database lost right after COMMIT must not turn a stored account into a 503: the answer is
/// read inside the transaction (found by tests/faults_db.rs in CI).
#[test]
fn a_committed_registration_is_answered_even_when_the_database_is_lost_right_after() {
    let mut store = MemoryStore::default();
    store.lost_after_commit = true;
    let session = register(&mut store, &crypto(), &Settings::default(), &ctx(NOW), registration("ada@example.org", "analytical-engine-1843"))
        .expect("a committed registration is a success");
    assert_eq!(session.user.email, "ada@example.org");
    assert!(store.state.users.contains_key(&session.user.id));
}

#[test]
fn a_committed_profile_change_is_answered_even_when_the_database_is_lost_right_after() {
    let (mut store, crypto, settings, session) = setup();
    store.lost_after_commit = true;
    let change = ProfileChange { name: Some(Name::parse("name", "Countess").expect("name")), email: None, current_password: None };
    let user = update_profile(&mut store, &crypto, &settings, &ctx(NOW), &session.user.id, change)
        .expect("a committed change is a success");
    assert_eq!(user.name, "Countess");
    assert_eq!(store.state.users[&session.user.id].name, "Countess");
}

#[test]
fn a_taken_email_is_409_whatever_its_case_and_spacing() {
    let (mut store, crypto, settings, _) = setup();
    let err = register(&mut store, &crypto, &settings, &ctx(NOW), registration("  ADA@example.ORG ", "another-good-secret")).unwrap_err();
    assert_eq!(err, Error::EmailTaken);
    assert_eq!(store.state.users.len(), 1);
    assert_eq!(store.events().last(), Some(&("register", false, Some("email_taken"))));
}

#[test]
fn login_succeeds_and_fails_identically_for_unknown_email_and_wrong_password() {
    let (mut store, crypto, settings, session) = setup();
    let ok = login(&mut store, &crypto, &settings, &ctx(NOW + 1), credentials("ada@example.org", "analytical-engine-1843")).expect("login");
    assert_eq!(ok.user.id, session.user.id);
    let wrong = login(&mut store, &crypto, &settings, &ctx(NOW + 2), credentials("ada@example.org", "nope-nope-nope")).unwrap_err();
    let unknown = login(&mut store, &crypto, &settings, &ctx(NOW + 3), credentials("bob@example.org", "analytical-engine-1843")).unwrap_err();
    assert_eq!(wrong, Error::InvalidCredentials);
    assert_eq!(wrong.render(), unknown.render());
    let reasons: Vec<_> = store.state.audit.iter().filter(|e| e.event == "login").map(|e| e.reason).collect();
    assert_eq!(reasons, vec![None, Some("wrong_password"), Some("unknown_email")]);
    assert!(store.state.audit.iter().all(|e| e.detail.as_deref().is_none_or(|d| !d.contains("ada@"))));
}

#[test]
fn the_tenth_consecutive_failure_throttles_the_account_then_it_recovers() {
    let (mut store, crypto, settings, _) = setup();
    for i in 0..10 {
        let err = login(&mut store, &crypto, &settings, &ctx(NOW + i), credentials("ada@example.org", "wrong-password-x")).unwrap_err();
        assert_eq!(err, Error::InvalidCredentials, "attempt {i}");
    }
    let err = login(&mut store, &crypto, &settings, &ctx(NOW + 20), credentials("ada@example.org", "analytical-engine-1843")).unwrap_err();
    assert_eq!(err, Error::Throttled { retry_after: 9 + 900 - 20 });
    // Unknown emails are throttled the same way (no enumeration through 429s).
    for i in 0..10 {
        let _ = login(&mut store, &crypto, &settings, &ctx(NOW + i), credentials("ghost@example.org", "wrong-password-x"));
    }
    assert!(matches!(
        login(&mut store, &crypto, &settings, &ctx(NOW + 20), credentials("ghost@example.org", "x")),
        Err(Error::Throttled { .. })
    ));
    // After the window, the right password works and resets the counter.
    login(&mut store, &crypto, &settings, &ctx(NOW + 9 + 900), credentials("ada@example.org", "analytical-engine-1843")).expect("recovered");
    let email_hash = store.state.users.values().next().expect("user").email_hash.clone();
    assert!(!store.state.counters.contains_key(&("account", email_hash)));
    // The address counts failures only (20 here, the ghost's too), and no check is left in flight.
    assert_eq!(store.state.counters[&("address", "192.0.2.1".into())].failures, 20);
    assert!(store.state.checks.is_empty());
}

#[test]
fn checks_in_flight_count_against_the_limit_so_concurrency_cannot_overshoot_it() {
    let settings = Settings { account_max_failures: 3, ..Settings::default() };
    let two_failures = || {
        let (mut store, crypto, _, _) = setup();
        for i in 0..2 {
            let _ = login(&mut store, &crypto, &settings, &ctx(NOW + i), credentials("ada@example.org", "wrong-password-x"));
        }
        let account = crypto.email.blind_index(&parse_email("email", "ada@example.org").expect("email"));
        (store, crypto, account)
    };
    let (mut store, crypto, account) = two_failures();
    // Two failures: a third check may run. While it runs, every other attempt is refused, as it
    // would be if the running one turned out wrong, but told to retry in a second, not to wait
    // out the window: the running one may be right.
    let running = CountedAttempt::reserve(&mut store, &settings, &ctx(NOW + 5), &account).expect("store").expect("third check");
    for i in 0..5 {
        let refused = CountedAttempt::reserve(&mut store, &settings, &ctx(NOW + 6 + i), &account).expect("store");
        assert_eq!(refused.err(), Some(1), "attempt {i}");
    }
    // The refused ones are counted nowhere.
    assert_eq!((store.state.counters[&("account", account.clone())].failures, store.state.checks.len()), (2, 1));
    running.settle(&mut store, &settings, &ctx(NOW + 7), Attempt::Failed).expect("settled");
    let err = login(&mut store, &crypto, &settings, &ctx(NOW + 8), credentials("ada@example.org", "analytical-engine-1843")).unwrap_err();
    assert_eq!(err, Error::Throttled { retry_after: 7 + 900 - 8 }, "the third failure starts the window's wait");

    // Had the running check been right, the account would have been free again.
    let (mut store, crypto, account) = two_failures();
    let running = CountedAttempt::reserve(&mut store, &settings, &ctx(NOW + 5), &account).expect("store").expect("third check");
    assert_eq!(CountedAttempt::reserve(&mut store, &settings, &ctx(NOW + 6), &account).expect("store").err(), Some(1));
    running.settle(&mut store, &settings, &ctx(NOW + 7), Attempt::Succeeded).expect("settled");
    login(&mut store, &crypto, &settings, &ctx(NOW + 8), credentials("ada@example.org", "analytical-engine-1843")).expect("free again");

    // A check never ended (its instance died) stops counting after a minute.
    let (mut store, crypto, account) = two_failures();
    let _lost = CountedAttempt::reserve(&mut store, &settings, &ctx(NOW + 5), &account).expect("store").expect("third check");
    let still = login(&mut store, &crypto, &settings, &ctx(NOW + 5 + 59), credentials("ada@example.org", "analytical-engine-1843"));
    assert_eq!(still.unwrap_err(), Error::Throttled { retry_after: 1 });
    login(&mut store, &crypto, &settings, &ctx(NOW + 5 + 60), credentials("ada@example.org", "analytical-engine-1843")).expect("expired");
    assert!(store.state.checks.is_empty(), "the lost check was removed with the next one");
}

#[test]
fn a_taken_email_at_registration_counts_against_the_address_as_at_login() {
    let (mut store, crypto, _, _) = setup();
    let settings = Settings { address_max_failures: 3, ..Settings::default() };
    for i in 0..2 {
        let err = register(&mut store, &crypto, &settings, &ctx(NOW + i), registration("ada@example.org", "another-password-1")).unwrap_err();
        assert_eq!(err, Error::EmailTaken);
    }
    // The address's third failure, here a wrong login: its limit is reached for both.
    let _ = login(&mut store, &crypto, &settings, &ctx(NOW + 2), credentials("ada@example.org", "wrong-password-x"));
    let err = register(&mut store, &crypto, &settings, &ctx(NOW + 10), registration("new@example.org", "another-password-1")).unwrap_err();
    assert_eq!(err, Error::Throttled { retry_after: 890 });
    let err = login(&mut store, &crypto, &settings, &ctx(NOW + 10), credentials("ada@example.org", "analytical-engine-1843")).unwrap_err();
    assert_eq!(err, Error::Throttled { retry_after: 890 });
    assert!(store.events().contains(&("register", false, Some("throttled"))));
    assert_eq!(store.state.users.len(), 1, "nothing registered while throttled");
    // Another address registers; a registration that succeeds counts nothing.
    let other = Ctx { client_addr: "198.51.100.7".into(), ..ctx(NOW + 10) };
    register(&mut store, &crypto, &settings, &other, registration("new@example.org", "another-password-1")).expect("other address");
    assert_eq!(store.state.counters.get(&("address", "198.51.100.7".into())), None);
}

#[test]
fn the_address_limit_counts_failures_across_accounts() {
    let (mut store, crypto, _, _) = setup();
    let settings = Settings { address_max_failures: 3, ..Settings::default() };
    for (i, email) in ["a@example.org", "b@example.org", "c@example.org"].iter().enumerate() {
        let _ = login(&mut store, &crypto, &settings, &ctx(NOW + i as u64), credentials(email, "whatever-123"));
    }
    let err = login(&mut store, &crypto, &settings, &ctx(NOW + 10), credentials("ada@example.org", "analytical-engine-1843")).unwrap_err();
    assert_eq!(err, Error::Throttled { retry_after: 890 });
    let other_address = Ctx { client_addr: "198.51.100.7".into(), ..ctx(NOW + 10) };
    login(&mut store, &crypto, &settings, &other_address, credentials("ada@example.org", "analytical-engine-1843")).expect("other address");
    // Only failures count at an address: the success left that one's counter empty.
    assert_eq!(store.state.counters.get(&("address", "198.51.100.7".into())), None);
    assert!(store.state.checks.is_empty());
}

#[test]
fn refresh_rotates_and_reuse_after_the_grace_window_revokes_the_family() {
    let (mut store, crypto, settings, session) = setup();
    let first = session.refresh;
    let second = refresh(&mut store, &crypto, &settings, &ctx(NOW + 100), &first).expect("rotated").refresh;
    assert_ne!(first, second);
    // Within the grace window the old token yields a sibling instead of revoking.
    let sibling = refresh(&mut store, &crypto, &settings, &ctx(NOW + 105), &first).expect("grace").refresh;
    assert_ne!(sibling, second);
    // From its 10th whole second on (it may be 10.9 s), reuse of the old token revokes the
    // whole family.
    assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 110), &first).unwrap_err(), Error::InvalidRefreshToken);
    for token in [&second, &sibling] {
        assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 112), token).unwrap_err(), Error::InvalidRefreshToken);
    }
    assert!(store.events().contains(&("refresh_reuse", false, Some("reuse"))));

    // A window of 0 turns it off: reuse within the same second revokes too.
    let (mut store, crypto, mut settings, session) = setup();
    settings.refresh_grace_secs = 0;
    let second = refresh(&mut store, &crypto, &settings, &ctx(NOW + 100), &session.refresh).expect("rotated").refresh;
    assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 100), &session.refresh).unwrap_err(), Error::InvalidRefreshToken);
    assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 100), &second).unwrap_err(), Error::InvalidRefreshToken);
}

#[test]
fn expired_unknown_and_logged_out_refresh_tokens_are_refused() {
    let (mut store, crypto, settings, session) = setup();
    let expired = ctx(NOW + settings.refresh_ttl_secs);
    assert_eq!(refresh(&mut store, &crypto, &settings, &expired, &session.refresh).unwrap_err(), Error::InvalidRefreshToken);
    let unknown = RefreshToken::generate();
    assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW), &unknown).unwrap_err(), Error::InvalidRefreshToken);
    logout(&mut store, &ctx(NOW), &session.refresh, LogoutScope::Session).expect("logout");
    logout(&mut store, &ctx(NOW), &unknown, LogoutScope::All).expect("logout of an unknown token is quiet");
    assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 1), &session.refresh).unwrap_err(), Error::InvalidRefreshToken);
}

#[test]
fn logout_ends_this_session_the_others_or_all_and_an_old_token_only_its_own() {
    let (mut store, crypto, settings, first) = setup();
    let sign_in = |store: &mut MemoryStore| login(store, &crypto, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).expect("login");
    let (second, third) = (sign_in(&mut store), sign_in(&mut store));
    let live = |store: &mut MemoryStore, s: &Session| refresh(store, &crypto, &settings, &ctx(NOW + 20), &s.refresh).is_ok();

    // "others" keeps the caller's session and ends the rest.
    logout(&mut store, &ctx(NOW), &second.refresh, LogoutScope::Others).expect("logout others");
    assert_eq!((live(&mut store, &first), live(&mut store, &third)), (false, false));
    assert!(live(&mut store, &second), "the caller's own session stays");
    assert!(store.events().iter().filter(|e| e.0 == "logout").count() == 1);

    // A rotated token (what a thief may have kept) ends its own session only, whatever it asks.
    let (mut store, crypto, settings, first) = setup();
    let second = login(&mut store, &crypto, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).expect("login");
    let rotated = refresh(&mut store, &crypto, &settings, &ctx(NOW), &first.refresh).expect("rotate");
    logout(&mut store, &ctx(NOW + 30), &first.refresh, LogoutScope::All).expect("logout");
    assert!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 40), &rotated.refresh).is_err(), "its session ended");
    assert!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 40), &second.refresh).is_ok(), "the other session stays");

    // "all" from a current token ends every session.
    let third = login(&mut store, &crypto, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).expect("login");
    logout(&mut store, &ctx(NOW + 50), &third.refresh, LogoutScope::All).expect("logout all");
    assert!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 60), &third.refresh).is_err());
    assert_eq!(LogoutScope::parse("everywhere"), None);
}

#[test]
fn a_user_lists_their_sessions_and_ends_one_by_id() {
    let (mut store, crypto, settings, first) = setup();
    let elsewhere = Ctx { client_addr: "2001:db8::7".into(), user_agent: None, ..ctx(NOW + 100) };
    let second = login(&mut store, &crypto, &settings, &elsewhere, credentials("ada@example.org", "analytical-engine-1843")).expect("login");
    let list = |store: &mut MemoryStore, s: &Session, now: u64| {
        let token = check_access_token(&crypto, &ctx(now), Some(&s.access.token)).expect("token");
        sessions(store, &ctx(now), token).expect("sessions")
    };
    let listed = list(&mut store, &first, NOW + 200);
    assert_eq!(listed.len(), 2);
    // Most recently used first; the asking one is current; where each began.
    assert_eq!((listed[0].current, listed[1].current), (false, true));
    assert_eq!(listed[0].origin, SessionOrigin { client_address: Some("2001:db8::7".into()), user_agent: None });
    assert_eq!(listed[1].origin, SessionOrigin { client_address: Some("192.0.2.1".into()), user_agent: Some("test-agent/1.0".into()) });
    assert_eq!((listed[1].created_at, listed[1].last_used_at, listed[0].last_used_at), (NOW, NOW, NOW + 100));
    // A refresh is a use.
    let refreshed = refresh(&mut store, &crypto, &settings, &ctx(NOW + 300), &first.refresh).expect("refresh");
    let listed = list(&mut store, &refreshed, NOW + 300);
    assert_eq!((listed[0].last_used_at, listed[0].current), (NOW + 300, true));

    // Ending the other session: its refresh token is refused, and it leaves the list.
    let other = listed[1].id.clone();
    revoke_session(&mut store, &ctx(NOW + 310), &first.user.id, &other).expect("revoked");
    assert!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 320), &second.refresh).is_err());
    assert_eq!(list(&mut store, &refreshed, NOW + 320).len(), 1);
    let revoked: Vec<_> = store.state.audit.iter().filter(|e| e.event == "session_revoke").map(|e| e.detail.clone()).collect();
    assert_eq!(revoked, [Some(format!("{{\"session\":\"{other}\"}}"))]);
    // Again, another user's, or an id that names none: 404 alike.
    assert_eq!(revoke_session(&mut store, &ctx(NOW + 330), &first.user.id, &other), Err(Error::SessionNotFound));
    let stranger = register(&mut store, &crypto, &settings, &ctx(NOW), registration("grace@example.org", "cobol-compiler-1959")).expect("registered");
    assert_eq!(revoke_session(&mut store, &ctx(NOW + 330), &stranger.user.id, &listed[0].id), Err(Error::SessionNotFound));
    assert_eq!(list(&mut store, &refreshed, NOW + 330).len(), 1, "the owner's session is untouched");
    assert_eq!(revoke_session(&mut store, &ctx(NOW + 330), &first.user.id, "not-a-session"), Err(Error::SessionNotFound));
    // Expired sessions are not listed.
    assert!(store.live_sessions(&first.user.id, "", NOW + 300 + settings.refresh_ttl_secs, 100).expect("sessions").is_empty());
}

#[test]
fn user_agents_are_recorded_without_control_characters_and_cut() {
    assert_eq!(Ctx::user_agent_from(Some("curl/8.5.0")), Some("curl/8.5.0".into()));
    assert_eq!(Ctx::user_agent_from(Some("evil\r\nX-Injected: 1\u{0}")), Some("evilX-Injected: 1".into()));
    assert_eq!(Ctx::user_agent_from(Some(&"é".repeat(300))).map(|ua| ua.chars().count()), Some(255));
    assert_eq!(Ctx::user_agent_from(Some(" \t ")), None);
    assert_eq!(Ctx::user_agent_from(None), None);
}

#[test]
fn password_change_needs_the_current_password_and_revokes_every_session() {
    let (mut store, crypto, settings, session) = setup();
    let id = session.user.id.clone();
    let other = login(&mut store, &crypto, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).expect("login");
    let new = Password::new_secret("difference-engine-1822").expect("valid");
    assert_eq!(
        change_password(&mut store, &crypto, &settings, &ctx(NOW), &id, &Password::presented("wrong"), &new).unwrap_err(),
        Error::WrongPassword
    );
    change_password(&mut store, &crypto, &settings, &ctx(NOW), &id, &Password::presented("analytical-engine-1843"), &new).expect("changed");
    for token in [&session.refresh, &other.refresh] {
        assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 1), token).unwrap_err(), Error::InvalidRefreshToken);
    }
    login(&mut store, &crypto, &settings, &ctx(NOW + 2), credentials("ada@example.org", "difference-engine-1822")).expect("new password");
}

/// Another request's password change, committed between this request's read of the user and
/// its write (`before_lock_user` plays it).
fn password_changed_meanwhile(state: &mut crate::domain::memory::State) {
    for user in state.users.values_mut() {
        user.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$changed-meanwhile".into());
    }
}

#[test]
fn a_password_change_committed_meanwhile_is_neither_undone_nor_outlived() {
    let (mut store, crypto, settings, session) = setup();
    let id = session.user.id.clone();
    let changed = || Some("$argon2id$v=19$m=19456,t=2,p=1$changed-meanwhile".to_string());
    // A name change (no password needed) read the old hash: it must not write it back.
    store.before_lock_user = Some(password_changed_meanwhile);
    let rename = ProfileChange { name: Some(Name::parse("name", "Countess").expect("name")), email: None, current_password: None };
    assert_eq!(update_profile(&mut store, &crypto, &settings, &ctx(NOW), &id, rename).expect("renamed").name, "Countess");
    assert_eq!(store.state.users[&id].password_hash, changed());

    // A login, an email change, a password change and a deletion that checked the old password
    // each fail, and leave the new hash, the email and every session as they were.
    let (mut store, crypto, settings, session) = setup();
    let families = store.state.families.len();
    store.before_lock_user = Some(password_changed_meanwhile);
    let err = login(&mut store, &crypto, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).unwrap_err();
    assert_eq!(err, Error::InvalidCredentials);
    assert_eq!(store.state.families.len(), families, "no session from the old password");
    assert_eq!(store.events().last(), Some(&("login", false, Some("password_changed"))));

    let (mut store, crypto, settings, session_b) = setup();
    let id = session_b.user.id.clone();
    store.before_lock_user = Some(password_changed_meanwhile);
    let move_email = ProfileChange {
        name: None,
        email: Some(parse_email("email", "new@example.org").expect("email")),
        current_password: Some(Password::presented("analytical-engine-1843")),
    };
    assert_eq!(update_profile(&mut store, &crypto, &settings, &ctx(NOW), &id, move_email).unwrap_err(), Error::WrongPassword);
    assert_eq!(to_user(&crypto, &store.state.users[&id]).expect("user").email, "ada@example.org");
    assert_eq!(store.state.users[&id].password_hash, changed());
    // Each refusal is audited as the login's is.
    assert_eq!(store.events().last(), Some(&("profile_change", false, Some("password_changed"))));

    // Each on a store of its own: the change made meanwhile stays, and would fail the next
    // check before it races.
    let (mut store, crypto, settings, session_c) = setup();
    let id = session_c.user.id.clone();
    store.before_lock_user = Some(password_changed_meanwhile);
    let new = Password::new_secret("difference-engine-1822").expect("valid");
    let err = change_password(&mut store, &crypto, &settings, &ctx(NOW), &id, &Password::presented("analytical-engine-1843"), &new).unwrap_err();
    assert_eq!(err, Error::WrongPassword);
    assert_eq!(store.state.users[&id].password_hash, changed());
    assert_eq!(store.events().last(), Some(&("password_change", false, Some("password_changed"))));

    let (mut store, _, settings, session_d) = setup();
    let id = session_d.user.id.clone();
    store.before_lock_user = Some(password_changed_meanwhile);
    let err = delete_account(&mut store, &settings, &ctx(NOW), &id, &Password::presented("analytical-engine-1843")).unwrap_err();
    assert_eq!(err, Error::WrongPassword);
    assert!(store.state.users.contains_key(&id));
    assert_eq!(store.events().last(), Some(&("account_delete", false, Some("password_changed"))));
    drop(session);
}

#[test]
fn profile_changes_name_and_email_with_confirmation() {
    let (mut store, crypto, settings, session) = setup();
    let id = session.user.id.clone();
    register(&mut store, &crypto, &settings, &ctx(NOW), registration("taken@example.org", "another-good-secret")).expect("second user");
    let change = |name: Option<&str>, email: Option<&str>, current: Option<&str>| ProfileChange {
        name: name.map(|n| Name::parse("name", n).expect("name")),
        email: email.map(|e| parse_email("email", e).expect("email")),
        current_password: current.map(Password::presented),
    };
    let user = update_profile(&mut store, &crypto, &settings, &ctx(NOW), &id, change(Some("Countess"), None, None)).expect("name");
    assert_eq!(user.name, "Countess");
    let err = update_profile(&mut store, &crypto, &settings, &ctx(NOW), &id, change(None, Some("new@example.org"), None)).unwrap_err();
    assert!(matches!(err, Error::Validation(ref errors) if errors[0].field == "current_password"));
    let err = update_profile(&mut store, &crypto, &settings, &ctx(NOW), &id, change(None, Some("new@example.org"), Some("bad"))).unwrap_err();
    assert_eq!(err, Error::WrongPassword);
    let err = update_profile(&mut store, &crypto, &settings, &ctx(NOW), &id, change(None, Some("Taken@example.org"), Some("analytical-engine-1843"))).unwrap_err();
    assert_eq!(err, Error::EmailTaken);
    let user = update_profile(&mut store, &crypto, &settings, &ctx(NOW), &id, change(None, Some("NEW@example.org"), Some("analytical-engine-1843"))).expect("email");
    assert_eq!(user.email, "new@example.org");
    login(&mut store, &crypto, &settings, &ctx(NOW), credentials("new@example.org", "analytical-engine-1843")).expect("login with the new email");
    // The same email again needs no password (nothing changes).
    update_profile(&mut store, &crypto, &settings, &ctx(NOW), &id, change(None, Some("new@example.org"), None)).expect("no-op");
}

#[test]
fn deleting_the_account_removes_the_user_and_its_tokens() {
    let (mut store, crypto, settings, session) = setup();
    let id = session.user.id.clone();
    assert_eq!(delete_account(&mut store, &settings, &ctx(NOW), &id, &Password::presented("wrong")).unwrap_err(), Error::WrongPassword);
    delete_account(&mut store, &settings, &ctx(NOW), &id, &Password::presented("analytical-engine-1843")).expect("deleted");
    assert!(store.state.users.is_empty());
    assert!(store.state.tokens.is_empty());
    let token = check_access_token(&crypto, &ctx(NOW), Some(&session.access.token)).expect("claims still fine");
    assert_eq!(me(&mut store, &crypto, token).unwrap_err(), Error::InvalidToken);
    assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW), &session.refresh).unwrap_err(), Error::InvalidRefreshToken);
}

#[test]
fn users_read_only_themselves_and_services_read_anyone_within_their_budget() {
    let (mut store, crypto, _, a) = setup();
    let settings = Settings { service_calls_per_minute: 2, ..Settings::default() };
    let b = register(&mut store, &crypto, &settings, &ctx(NOW), registration("bob@example.org", "another-good-secret")).expect("b");
    let as_a = Caller::User(a.user.id.clone());
    assert_eq!(read_user(&mut store, &crypto, &settings, &ctx(NOW), &as_a, &a.user.id).expect("own").email, "ada@example.org");
    assert_eq!(read_user(&mut store, &crypto, &settings, &ctx(NOW), &as_a, &b.user.id).unwrap_err(), Error::UserNotFound);
    let (users, missing) = read_users(&mut store, &crypto, &settings, &ctx(NOW), &as_a, vec![b.user.id.clone(), a.user.id.clone()]).expect("batch");
    assert_eq!(users.iter().map(|u| u.id.clone()).collect::<Vec<_>>(), vec![a.user.id.clone()]);
    assert_eq!(missing, vec![b.user.id.clone()]);

    let service = Caller::Service("customer".into());
    let now = NOW - NOW % 60;
    let (users, missing) = read_users(&mut store, &crypto, &settings, &ctx(now), &service, vec![b.user.id.clone(), "nope".into(), a.user.id.clone(), "nope".into()]).expect("batch");
    assert_eq!(users.iter().map(|u| u.id.clone()).collect::<Vec<_>>(), vec![b.user.id.clone(), a.user.id.clone()]);
    assert_eq!(missing, vec!["nope".to_string()]);
    assert_eq!(read_user(&mut store, &crypto, &settings, &ctx(now + 1), &service, "nope").unwrap_err(), Error::UserNotFound);
    assert_eq!(read_user(&mut store, &crypto, &settings, &ctx(now + 2), &service, &a.user.id).unwrap_err(), Error::RateLimited { retry_after: 58 });
    read_user(&mut store, &crypto, &settings, &ctx(now + 60), &service, &a.user.id).expect("next minute");
    let reads = store.state.audit.iter().filter(|e| e.event == "service_read").count();
    assert_eq!(reads, 3);
    assert!(store.state.audit.iter().any(|e| e.event == "service_read" && e.actor == "service:customer" && e.detail.as_deref().is_some_and(|d| d.contains("nope"))));
}

#[test]
fn service_and_user_tokens_are_told_apart() {
    let crypto = crypto();
    let service_keys = SigningKeys::parse("c1:AgECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key");
    let trusted = || Ok(Some(TrustedServiceKeys::parse(&service_keys.trusted_service_entries("customer")).expect("trusted")));
    let service_token = service_keys.issue_service_token("customer", NOW).expect("token").token;
    assert_eq!(authenticate_caller(&crypto, &ctx(NOW), Some(&service_token), trusted).expect("service"), Caller::Service("customer".into()));
    let user_token = crypto.signing.issue_access_token(&crypto.access, "u1", NOW).expect("token").token;
    assert_eq!(authenticate_caller(&crypto, &ctx(NOW), Some(&user_token), trusted).expect("user"), Caller::User("u1".into()));
    assert_eq!(authenticate_caller(&crypto, &ctx(NOW + 120), Some(&service_token), trusted).unwrap_err(), Error::InvalidToken);
    assert_eq!(authenticate_caller(&crypto, &ctx(NOW), Some(&service_token), || Ok(None)).unwrap_err(), Error::InvalidToken);
    assert_eq!(authenticate_caller(&crypto, &ctx(NOW), None, trusted).unwrap_err(), Error::MissingToken);
    // A service token is never a user's access token.
    assert_eq!(authenticate_user(&crypto, &ctx(NOW), Some(&service_token)).unwrap_err(), Error::InvalidToken);
}

#[test]
fn old_hashes_are_replaced_on_login_and_old_keys_resealed() {
    let (mut store, _, settings, session) = setup();
    let id = session.user.id.clone();
    // Rotate the encryption key (prepend) and plant a weak hash.
    let rotated = Crypto {
        email: EmailKeyring::parse("k2:BwECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("keys"),
        ..crypto()
    };
    use argon2::password_hash::PasswordHasher as _;
    let weak = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon2::Params::new(4096, 1, 1, None).expect("params"))
        .hash_password_with_salt(b"analytical-engine-1843", b"0123456789abcdef")
        .expect("hash")
        .to_string();
    store.state.users.get_mut(&id).expect("user").password_hash = Some(weak);
    login(&mut store, &rotated, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).expect("login");
    let row = &store.state.users[&id];
    assert!(password::is_current(row.password_hash.as_deref().expect("hash")));
    assert!(row.email_encrypted.starts_with("v1.k2."), "re-sealed with the active key");
    assert!(store.events().contains(&("login", true, Some("rehashed"))));
}

#[test]
fn a_service_read_too_long_to_list_in_full_lists_what_fits_and_counts_the_rest() {
    // 100 ids of 255 three-byte characters: 76 KB of ids, over the audit column's 65,535 bytes.
    let ids: Vec<String> = (0..100).map(|i| format!("{i:03}{}", "€".repeat(252))).collect();
    let detail: serde_json::Value = serde_json::from_str(&service_read_detail(&ids, 0)).expect("json");
    let listed = detail["ids"].as_array().expect("ids").len();
    assert!(service_read_detail(&ids, 0).len() <= 65_535);
    assert_eq!((listed + detail["ids_omitted"].as_u64().expect("omitted") as usize, detail["found"].as_u64()), (100, Some(0)));
    assert!(listed >= 80, "only the last ones are left out: {listed}");
    assert_eq!(detail["ids"][0], ids[0].as_str());
    let short = service_read_detail(&ids[..2], 1);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&short).expect("json"), serde_json::json!({ "ids": &ids[..2], "ids_omitted": 0, "found": 1 }));
}

#[test]
fn batch_size_bounds() {
    assert_eq!(check_batch_size(0).unwrap_err().code, "too_few");
    assert!(check_batch_size(100).is_ok());
    assert_eq!(check_batch_size(101).unwrap_err().code, "too_many");
}

/// `GET /users/me` recognizes the access tokens auth recorded when it issued them (register,
/// login, refresh) and verifies every other one; a record counts only for its own user.
#[test]
fn me_recognizes_recorded_tokens_and_verifies_every_other_one() {
    let (mut store, crypto, settings, session) = setup();
    let id = session.user.id.clone();
    let me_with = |store: &mut MemoryStore, token: &str| {
        let token = check_access_token(&crypto, &ctx(NOW), Some(token))?;
        me(store, &crypto, token)
    };
    let login = login(&mut store, &crypto, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).expect("login");
    let refreshed = refresh(&mut store, &crypto, &settings, &ctx(NOW), &login.refresh).expect("refresh");
    for issued in [&session.access, &login.access, &refreshed.access] {
        assert!(store.state.tokens.values().any(|(row, _)| row.access_token_hash == issued.digest()), "recorded at issuance");
        assert_eq!(me_with(&mut store, &issued.token).expect("signed in").id, id);
    }

    // Same kid, another key: a forgery. Refused unless a record of auth vouches for exactly it,
    // and only for the user whose family holds the record.
    let forger = SigningKeys::parse("s1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=").expect("key");
    let forged = forger.issue_access_token(&crypto.access, &id, NOW).expect("signed");
    assert_eq!(me_with(&mut store, &forged.token).unwrap_err(), Error::InvalidToken);
    let other = register(&mut store, &crypto, &settings, &ctx(NOW), registration("bob@example.org", "difference-engine-1822")).expect("bob");
    let forged_for_bob = forger.issue_access_token(&crypto.access, &other.user.id, NOW).expect("signed");
    record_for(&mut store, &id, &forged.digest());
    assert_eq!(me_with(&mut store, &forged.token).expect("the record vouches").id, id);
    record_for(&mut store, &id, &forged_for_bob.digest());
    assert_eq!(me_with(&mut store, &forged_for_bob.token).unwrap_err(), Error::InvalidToken, "ada's record is no credential for bob");

    // Without any record (tokens issued before records existed), a valid token still works.
    for (row, _) in store.state.tokens.values_mut() {
        row.access_token_hash = String::new();
    }
    assert_eq!(me_with(&mut store, &session.access.token).expect("verified").id, id);
    // Claims are checked before any record is read.
    assert_eq!(me_with(&mut store, "not a token").unwrap_err(), Error::InvalidToken);
    let expired = check_access_token(&crypto, &ctx(NOW + 3_600), Some(&session.access.token)).unwrap_err();
    assert_eq!(expired, Error::InvalidToken);
    assert_eq!(check_access_token(&crypto, &ctx(NOW), None).unwrap_err(), Error::MissingToken);
}

/// Makes a refresh token of `user` record the access token with `digest`.
fn record_for(store: &mut MemoryStore, user: &str, digest: &str) {
    let (row, _) = store.state.tokens.values_mut().find(|(row, _)| row.user_id == user).expect("a refresh token of the user");
    row.access_token_hash = digest.to_owned();
}

// ---- password resets (domain::recovery) --------------------------------------------------------

mod resets {
    use super::*;
    use crate::domain::recovery::{RESET_TOKEN_TTL_SECS, ResetToken, issue_reset, reset_password};

    pub(super) fn mailer() -> Caller {
        Caller::Service("mailer".into())
    }

    pub(super) fn allowed() -> Vec<String> {
        vec!["mailer".into()]
    }

    pub(super) fn email(raw: &str) -> sealed_email::NormalizedEmail {
        parse_email("email", raw).expect("email")
    }

    fn new_password(raw: &str) -> Password {
        Password::new_secret(raw).expect("password")
    }

    #[test]
    fn a_token_from_the_mailer_sets_a_new_password_once_and_signs_out_everywhere() {
        let (mut store, crypto, settings, session) = setup();
        let reset = issue_reset(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &email(" ADA@example.org")).expect("issued");
        assert_eq!(reset.user_id, session.user.id);
        assert_eq!(reset.expires_at, NOW + RESET_TOKEN_TTL_SECS);
        assert!(!format!("{reset:?}").contains(reset.token.as_str()), "the token never prints");
        // Stored hashed only.
        assert!(store.state.one_time_tokens.contains_key(&(OneTimeKind::PasswordReset, reset.token.hash())));

        reset_password(&mut store, &crypto, &ctx(NOW + 60), Some(&reset.token), &new_password("difference-engine-1822")).expect("reset");
        assert!(login(&mut store, &crypto, &settings, &ctx(NOW + 61), credentials("ada@example.org", "difference-engine-1822")).is_ok());
        assert_eq!(
            login(&mut store, &crypto, &settings, &ctx(NOW + 62), credentials("ada@example.org", "analytical-engine-1843")).unwrap_err(),
            Error::InvalidCredentials
        );
        // The session from before the reset is over.
        assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 63), &session.refresh).unwrap_err(), Error::InvalidRefreshToken);
        // Once only.
        let again = reset_password(&mut store, &crypto, &ctx(NOW + 64), Some(&reset.token), &new_password("jacquard-loom-1804"));
        assert_eq!(again.unwrap_err(), Error::InvalidResetToken);
        let events = store.events();
        assert!(events.contains(&("password_reset_issue", true, None)), "{events:?}");
        assert!(events.contains(&("password_reset", true, None)), "{events:?}");
        assert!(events.contains(&("password_reset", false, Some("invalid_token"))), "{events:?}");
    }

    #[test]
    fn only_an_allowed_service_gets_a_token_and_an_unknown_email_is_404() {
        let (mut store, crypto, settings, session) = setup();
        let ada = email("ada@example.org");
        let user = Caller::User(session.user.id.clone());
        let customer = Caller::Service("customer".into());
        for caller in [&user, &customer] {
            let err = issue_reset(&mut store, &crypto, &settings, &ctx(NOW), caller, &allowed(), &ada).unwrap_err();
            assert_eq!(err, Error::Forbidden, "{caller:?}");
        }
        assert_eq!(issue_reset(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &[], &ada).unwrap_err(), Error::Forbidden);
        let err = issue_reset(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &email("nobody@example.org")).unwrap_err();
        assert_eq!(err, Error::UserNotFound);
        assert!(store.state.one_time_tokens.is_empty());
        assert!(store.events().contains(&("password_reset_issue", false, Some("unknown_email"))));
    }

    #[test]
    fn an_expired_a_replaced_or_a_malformed_token_is_refused() {
        let (mut store, crypto, settings, _) = setup();
        let ada = email("ada@example.org");
        let first = issue_reset(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &ada).expect("issued");
        let second = issue_reset(&mut store, &crypto, &settings, &ctx(NOW + 1), &mailer(), &allowed(), &ada).expect("issued");
        let pw = new_password("difference-engine-1822");
        assert_eq!(reset_password(&mut store, &crypto, &ctx(NOW + 2), Some(&first.token), &pw).unwrap_err(), Error::InvalidResetToken);
        assert_eq!(reset_password(&mut store, &crypto, &ctx(NOW + 2), None, &pw).unwrap_err(), Error::InvalidResetToken);
        let stranger = ResetToken::generate();
        assert_eq!(reset_password(&mut store, &crypto, &ctx(NOW + 2), Some(&stranger), &pw).unwrap_err(), Error::InvalidResetToken);
        let expired = ctx(NOW + 1 + RESET_TOKEN_TTL_SECS);
        assert_eq!(reset_password(&mut store, &crypto, &expired, Some(&second.token), &pw).unwrap_err(), Error::InvalidResetToken);
        assert!(login(&mut store, &crypto, &settings, &ctx(NOW + 3), credentials("ada@example.org", "analytical-engine-1843")).is_ok());
    }

    #[test]
    fn a_token_mailed_before_a_password_or_email_change_no_longer_works() {
        let (mut store, crypto, settings, session) = setup();
        let id = session.user.id.clone();
        let pw = new_password("difference-engine-1822");
        let before_password_change = issue_reset(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &email("ada@example.org")).expect("issued");
        let new = Password::new_secret("changed-by-ada-2024").expect("password");
        change_password(&mut store, &crypto, &settings, &ctx(NOW + 1), &id, &Password::presented("analytical-engine-1843"), &new).expect("changed");
        assert_eq!(reset_password(&mut store, &crypto, &ctx(NOW + 2), Some(&before_password_change.token), &pw).unwrap_err(), Error::InvalidResetToken);

        let before_email_change = issue_reset(&mut store, &crypto, &settings, &ctx(NOW + 3), &mailer(), &allowed(), &email("ada@example.org")).expect("issued");
        let change = ProfileChange { name: None, email: Some(email("countess@example.org")), current_password: Some(Password::presented("changed-by-ada-2024")) };
        update_profile(&mut store, &crypto, &settings, &ctx(NOW + 4), &id, change).expect("email changed");
        assert_eq!(reset_password(&mut store, &crypto, &ctx(NOW + 5), Some(&before_email_change.token), &pw).unwrap_err(), Error::InvalidResetToken);
        // A name change alone keeps it.
        let kept = issue_reset(&mut store, &crypto, &settings, &ctx(NOW + 6), &mailer(), &allowed(), &email("countess@example.org")).expect("issued");
        let rename = ProfileChange { name: Some(Name::parse("name", "Augusta Ada King").expect("name")), email: None, current_password: None };
        update_profile(&mut store, &crypto, &settings, &ctx(NOW + 7), &id, rename).expect("renamed");
        assert!(reset_password(&mut store, &crypto, &ctx(NOW + 8), Some(&kept.token), &pw).is_ok());
    }

    #[test]
    fn a_backfilled_user_without_a_password_signs_in_after_a_reset() {
        let (mut store, crypto, settings, session) = setup();
        let row = store.state.users.get_mut(&session.user.id).expect("user");
        row.password_hash = None;
        row.must_reset_password = true;
        assert_eq!(
            login(&mut store, &crypto, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).unwrap_err(),
            Error::InvalidCredentials
        );
        let reset = issue_reset(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &email("ada@example.org")).expect("issued");
        reset_password(&mut store, &crypto, &ctx(NOW + 5), Some(&reset.token), &new_password("first-own-password-1")).expect("reset");
        assert!(!store.state.users[&session.user.id].must_reset_password);
        assert!(login(&mut store, &crypto, &settings, &ctx(NOW + 6), credentials("ada@example.org", "first-own-password-1")).is_ok());
    }
}

// ---- email verification (domain::recovery) -----------------------------------------------------

mod verification {
    use super::*;
    use super::resets::{allowed, email, mailer};
    use crate::domain::recovery::{VERIFICATION_TOKEN_TTL_SECS, VerificationToken, issue_verification, verify_email};

    fn verified(store: &MemoryStore, crypto: &Crypto, id: &str) -> bool {
        to_user(crypto, &store.state.users[id]).expect("user").email_verified
    }

    #[test]
    fn a_token_mailed_to_the_address_verifies_it_once() {
        let (mut store, crypto, settings, session) = setup();
        let id = session.user.id.clone();
        assert!(!session.user.email_verified, "a new account is unverified");
        let issued = issue_verification(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &email("Ada@Example.org ")).expect("issued");
        assert_eq!((issued.user_id.as_str(), issued.expires_at), (id.as_str(), NOW + VERIFICATION_TOKEN_TTL_SECS));
        assert!(store.state.one_time_tokens.contains_key(&(OneTimeKind::EmailVerification, issued.token.hash())), "stored hashed");
        assert!(!format!("{issued:?}").contains(issued.token.as_str()), "the token never prints");

        verify_email(&mut store, &crypto, &ctx(NOW + 60), Some(&issued.token)).expect("verified");
        assert!(verified(&store, &crypto, &id));
        assert_eq!(store.state.users[&id].email_verified_at, i64::try_from(NOW + 60).ok());
        assert_eq!(verify_email(&mut store, &crypto, &ctx(NOW + 61), Some(&issued.token)).unwrap_err(), Error::InvalidVerificationToken, "once");
        // Nothing left to send for a verified address.
        let again = issue_verification(&mut store, &crypto, &settings, &ctx(NOW + 62), &mailer(), &allowed(), &email("ada@example.org"));
        assert_eq!(again.unwrap_err(), Error::EmailAlreadyVerified);
        // A verification token is not a reset token, nor the other way round.
        assert!(login(&mut store, &crypto, &settings, &ctx(NOW + 63), credentials("ada@example.org", "analytical-engine-1843")).is_ok());
        let events = store.events();
        assert!(events.contains(&("email_verification_issue", true, None)), "{events:?}");
        assert!(events.contains(&("email_verify", true, None)), "{events:?}");
        assert!(events.contains(&("email_verify", false, Some("invalid_token"))), "{events:?}");
    }

    #[test]
    fn only_the_mailer_asks_and_only_a_live_token_for_the_current_address_verifies() {
        let (mut store, crypto, settings, session) = setup();
        let id = session.user.id.clone();
        let ada = email("ada@example.org");
        for caller in [Caller::User(id.clone()), Caller::Service("customer".into())] {
            let err = issue_verification(&mut store, &crypto, &settings, &ctx(NOW), &caller, &allowed(), &ada).unwrap_err();
            assert_eq!(err, Error::Forbidden, "{caller:?}");
        }
        let err = issue_verification(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &email("nobody@example.org")).unwrap_err();
        assert_eq!(err, Error::UserNotFound);
        assert_eq!(verify_email(&mut store, &crypto, &ctx(NOW), None).unwrap_err(), Error::InvalidVerificationToken);
        assert_eq!(verify_email(&mut store, &crypto, &ctx(NOW), Some(&VerificationToken::generate())).unwrap_err(), Error::InvalidVerificationToken);

        // Expired.
        let first = issue_verification(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &ada).expect("issued");
        let late = ctx(NOW + VERIFICATION_TOKEN_TTL_SECS);
        assert_eq!(verify_email(&mut store, &crypto, &late, Some(&first.token)).unwrap_err(), Error::InvalidVerificationToken);
        // Mailed to the old address, used after an email change: refused, and the change
        // unverifies a verified address.
        let before_change = issue_verification(&mut store, &crypto, &settings, &ctx(NOW + 1), &mailer(), &allowed(), &ada).expect("issued");
        let change = ProfileChange { name: None, email: Some(email("countess@example.org")), current_password: Some(Password::presented("analytical-engine-1843")) };
        update_profile(&mut store, &crypto, &settings, &ctx(NOW + 2), &id, change).expect("email changed");
        assert_eq!(verify_email(&mut store, &crypto, &ctx(NOW + 3), Some(&before_change.token)).unwrap_err(), Error::InvalidVerificationToken);
        let new_address = issue_verification(&mut store, &crypto, &settings, &ctx(NOW + 4), &mailer(), &allowed(), &email("countess@example.org")).expect("issued");
        verify_email(&mut store, &crypto, &ctx(NOW + 5), Some(&new_address.token)).expect("verified");
        assert!(verified(&store, &crypto, &id));
        let change = ProfileChange { name: None, email: Some(email("ada@example.org")), current_password: Some(Password::presented("analytical-engine-1843")) };
        let user = update_profile(&mut store, &crypto, &settings, &ctx(NOW + 6), &id, change).expect("email changed back");
        assert!(!user.email_verified, "verified was said of the other address");
        // A name change keeps it verified.
        let token = issue_verification(&mut store, &crypto, &settings, &ctx(NOW + 7), &mailer(), &allowed(), &ada).expect("issued");
        verify_email(&mut store, &crypto, &ctx(NOW + 8), Some(&token.token)).expect("verified");
        let rename = ProfileChange { name: Some(Name::parse("name", "Augusta Ada King").expect("name")), email: None, current_password: None };
        assert!(update_profile(&mut store, &crypto, &settings, &ctx(NOW + 9), &id, rename).expect("renamed").email_verified);
    }

    /// The mailer looked the address up, then an email change (or a verification) committed
    /// before the token was stored: no token, for it would be mailed to the old address yet work
    /// for the account at its new one.
    #[test]
    fn no_token_is_stored_for_an_address_the_account_left_while_it_was_issued() {
        use crate::domain::recovery::issue_reset;
        fn email_changed_meanwhile(state: &mut crate::domain::memory::State) {
            for user in state.users.values_mut() {
                user.email_hash = "hash-of-the-new-address".into();
            }
        }
        fn verified_meanwhile(state: &mut crate::domain::memory::State) {
            for user in state.users.values_mut() {
                user.email_verified_at = Some(1);
            }
        }
        let (mut store, crypto, settings, _) = setup();
        let ada = email("ada@example.org");
        store.before_lock_user = Some(email_changed_meanwhile);
        let err = issue_reset(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &ada).unwrap_err();
        assert_eq!(err, Error::UserNotFound);
        assert!(store.state.one_time_tokens.is_empty());
        let (mut store, crypto, settings, _) = setup();
        store.before_lock_user = Some(email_changed_meanwhile);
        let err = issue_verification(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &ada).unwrap_err();
        assert_eq!(err, Error::UserNotFound);
        assert!(store.state.one_time_tokens.is_empty());
        let (mut store, crypto, settings, _) = setup();
        store.before_lock_user = Some(verified_meanwhile);
        let err = issue_verification(&mut store, &crypto, &settings, &ctx(NOW), &mailer(), &allowed(), &ada).unwrap_err();
        assert_eq!(err, Error::EmailAlreadyVerified);
        assert!(store.state.one_time_tokens.is_empty());
    }
}

// ---- the second factor -------------------------------------------------------------------------

/// The code the user's app shows at `now`, from the secret enrolment gave it.
fn app_code(enrollment: &mfa::Enrollment, now: u64) -> mfa::TotpCode {
    let secret = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &enrollment.secret).expect("base32");
    mfa::TotpCode::parse("mfa_code", &format!("{:06}", mfa::code_at(&secret, now / mfa::STEP_SECS))).expect("six digits")
}

fn with_factor(email: &str, password: &str, factor: mfa::SecondFactor) -> Credentials {
    Credentials { second_factor: Some(factor), ..credentials(email, password) }
}

#[test]
fn an_authenticator_app_is_added_in_two_steps_and_then_every_login_needs_its_code_once() {
    let (mut store, crypto, settings, session) = setup();
    let id = session.user.id.clone();
    let password = Password::presented("analytical-engine-1843");
    let wrong = Password::presented("difference-engine");
    assert_eq!(mfa::enroll(&mut store, &crypto, &settings, &ctx(NOW), &id, &wrong, "Acme").unwrap_err(), Error::WrongPassword);
    let enrollment = mfa::enroll(&mut store, &crypto, &settings, &ctx(NOW), &id, &password, "Acme").expect("enrolled");
    assert!(enrollment.otpauth_uri.starts_with("otpauth://totp/Acme:ada%40example%2Eorg?secret="), "{}", enrollment.otpauth_uri);
    let sealed = store.state.users[&id].totp.secret_sealed.clone().expect("stored");
    assert!(sealed.starts_with("v1.k1.") && !sealed.contains(&enrollment.secret), "sealed at rest");
    assert!(!format!("{enrollment:?}").contains(&enrollment.secret));

    // Not on until confirmed: logins need only the password, and a wrong code is the field's.
    let other_device = login(&mut store, &crypto, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).expect("password only");
    let wrong_code = mfa::TotpCode::parse("code", "000000").expect("digits");
    let Err(Error::Validation(errors)) = mfa::confirm(&mut store, &crypto, &ctx(NOW), &id, &wrong_code) else { panic!("a wrong code confirmed") };
    assert_eq!((errors[0].field.as_str(), errors[0].code), ("code", "incorrect"));
    let recovery = mfa::confirm(&mut store, &crypto, &ctx(NOW), &id, &app_code(&enrollment, NOW)).expect("confirmed");
    assert_eq!(recovery.len(), mfa::RECOVERY_CODE_COUNT);
    // Every session began with the password alone: all end, as after a password change.
    for ended in [&other_device.refresh, &session.refresh] {
        assert_eq!(refresh(&mut store, &crypto, &settings, &ctx(NOW + 1), ended).unwrap_err(), Error::InvalidRefreshToken);
    }
    assert!(recovery.iter().all(|code| code.len() == 19 && code.matches('-').count() == 3), "{recovery:?}");
    assert!(to_user(&crypto, &store.state.users[&id]).expect("user").mfa_enabled);
    assert_eq!(mfa::enroll(&mut store, &crypto, &settings, &ctx(NOW), &id, &password, "Acme").unwrap_err(), Error::MfaAlreadyEnabled);

    // The password alone: 401 mfa_required. The confirming code was spent; the next step's works once.
    let later = NOW + mfa::STEP_SECS;
    let password_only = || credentials("ada@example.org", "analytical-engine-1843");
    assert_eq!(login(&mut store, &crypto, &settings, &ctx(later), password_only()).unwrap_err(), Error::MfaRequired);
    let spent = with_factor("ada@example.org", "analytical-engine-1843", mfa::SecondFactor::Totp(app_code(&enrollment, NOW)));
    assert_eq!(login(&mut store, &crypto, &settings, &ctx(later), spent).unwrap_err(), Error::InvalidMfaCode);
    let fresh = || with_factor("ada@example.org", "analytical-engine-1843", mfa::SecondFactor::Totp(app_code(&enrollment, later)));
    let signed_in = login(&mut store, &crypto, &settings, &ctx(later), fresh()).expect("password and code");
    assert!(signed_in.user.mfa_enabled);
    assert_eq!(login(&mut store, &crypto, &settings, &ctx(later), fresh()).unwrap_err(), Error::InvalidMfaCode, "replayed");
    // A wrong password with a right code is the usual invalid_credentials.
    let wrong_password = with_factor("ada@example.org", "difference-engine", mfa::SecondFactor::Totp(app_code(&enrollment, later + 30)));
    assert_eq!(login(&mut store, &crypto, &settings, &ctx(later + 30), wrong_password).unwrap_err(), Error::InvalidCredentials);

    // A recovery code signs in once.
    let recovery_code = mfa::RecoveryCode::parse("recovery_code", &recovery[3].to_lowercase()).expect("code");
    let with_recovery = || with_factor("ada@example.org", "analytical-engine-1843", mfa::SecondFactor::Recovery(recovery_code.clone()));
    assert!(login(&mut store, &crypto, &settings, &ctx(later), with_recovery()).is_ok());
    assert_eq!(login(&mut store, &crypto, &settings, &ctx(later), with_recovery()).unwrap_err(), Error::InvalidMfaCode);
    assert_eq!(store.state.users[&id].totp.recovery_hashes.len(), mfa::RECOVERY_CODE_COUNT - 1);
    let reasons: Vec<_> = store.events().into_iter().filter(|(event, _, _)| *event == "login").map(|(_, ok, reason)| (ok, reason)).collect();
    assert!(reasons.contains(&(false, Some("mfa_required"))) && reasons.contains(&(true, Some("recovery_code"))), "{reasons:?}");
}

#[test]
fn wrong_codes_count_as_failed_logins_and_turning_the_app_off_needs_a_right_one() {
    let (mut store, crypto, settings, session) = setup();
    let id = session.user.id.clone();
    let password = Password::presented("analytical-engine-1843");
    let enrollment = mfa::enroll(&mut store, &crypto, &settings, &ctx(NOW), &id, &password, "auth").expect("enrolled");
    let recovery = mfa::confirm(&mut store, &crypto, &ctx(NOW), &id, &app_code(&enrollment, NOW)).expect("confirmed");
    let guess = |n: u32| mfa::SecondFactor::Totp(mfa::TotpCode::parse("c", &format!("{:06}", 100_000 + n)).expect("digits"));

    // Off needs a code; a wrong one is 403 and a failure.
    let none = mfa::disable(&mut store, &crypto, &settings, &ctx(NOW + 1), &id, &password, None).unwrap_err();
    assert!(matches!(none, Error::Validation(ref errors) if errors[0].field == "mfa_code"), "{none:?}");
    assert_eq!(mfa::disable(&mut store, &crypto, &settings, &ctx(NOW + 1), &id, &password, Some(&guess(0))).unwrap_err(), Error::WrongMfaCode);

    // Guessing codes at login throttles the account as guessing passwords does (10 in a row,
    // the disable's included): then even the right code waits.
    for n in 1..settings.account_max_failures {
        let attempt = with_factor("ada@example.org", "analytical-engine-1843", guess(n));
        assert_eq!(login(&mut store, &crypto, &settings, &ctx(NOW + 2), attempt).unwrap_err(), Error::InvalidMfaCode, "guess {n}");
    }
    let right = with_factor("ada@example.org", "analytical-engine-1843", mfa::SecondFactor::Totp(app_code(&enrollment, NOW + 30)));
    assert!(matches!(login(&mut store, &crypto, &settings, &ctx(NOW + 30), right).unwrap_err(), Error::Throttled { .. }));

    // After the window, a recovery code turns it off; the password alone signs in again.
    let after = NOW + settings.throttle_window_secs + 60;
    let recovery_code = mfa::SecondFactor::Recovery(mfa::RecoveryCode::parse("r", &recovery[0]).expect("code"));
    mfa::disable(&mut store, &crypto, &settings, &ctx(after), &id, &password, Some(&recovery_code)).expect("off");
    assert_eq!(store.state.users[&id].totp, crate::domain::ports::TotpRow::default());
    assert!(login(&mut store, &crypto, &settings, &ctx(after), credentials("ada@example.org", "analytical-engine-1843")).is_ok());
    assert_eq!(mfa::disable(&mut store, &crypto, &settings, &ctx(after), &id, &password, None).unwrap_err(), Error::MfaNotEnrolled);
    let events = store.events();
    assert!(events.contains(&("mfa_disable", false, Some("wrong_mfa_code"))) && events.contains(&("mfa_disable", true, None)), "{events:?}");
}

/// A password holder guessing codes at login cannot wipe the failures with a change confirmed
/// by the password alone: with an app confirmed, only a check of both factors ends the streak.
#[test]
fn a_right_password_alone_does_not_end_a_streak_of_wrong_codes() {
    let (mut store, crypto, settings, session) = setup();
    let id = session.user.id.clone();
    let password = || Password::presented("analytical-engine-1843");
    let enrollment = mfa::enroll(&mut store, &crypto, &settings, &ctx(NOW), &id, &password(), "auth").expect("enrolled");
    mfa::confirm(&mut store, &crypto, &ctx(NOW), &id, &app_code(&enrollment, NOW)).expect("confirmed");
    let guess = |n: u32| with_factor("ada@example.org", "analytical-engine-1843", mfa::SecondFactor::Totp(mfa::TotpCode::parse("c", &format!("{:06}", 100_000 + n)).expect("digits")));
    for n in 1..settings.account_max_failures {
        assert_eq!(login(&mut store, &crypto, &settings, &ctx(NOW + 2), guess(n)).unwrap_err(), Error::InvalidMfaCode, "guess {n}");
        let rename = ProfileChange { name: Some(Name::parse("name", &format!("Ada {n}")).expect("name")), email: None, current_password: Some(password()) };
        update_profile(&mut store, &crypto, &settings, &ctx(NOW + 2), &id, rename).expect("the password is right");
    }
    let last = settings.account_max_failures;
    assert_eq!(login(&mut store, &crypto, &settings, &ctx(NOW + 2), guess(last)).unwrap_err(), Error::InvalidMfaCode);
    let right = with_factor("ada@example.org", "analytical-engine-1843", mfa::SecondFactor::Totp(app_code(&enrollment, NOW + 30)));
    assert!(matches!(login(&mut store, &crypto, &settings, &ctx(NOW + 30), right).unwrap_err(), Error::Throttled { .. }), "ten wrong codes in a row");

    // Without a second factor a right password is all there is to prove: it ends the streak.
    let (mut store, crypto, settings, session) = setup();
    for _ in 1..settings.account_max_failures {
        let wrong = credentials("ada@example.org", "difference-engine");
        assert_eq!(login(&mut store, &crypto, &settings, &ctx(NOW), wrong).unwrap_err(), Error::InvalidCredentials);
    }
    let rename = ProfileChange { name: Some(Name::parse("name", "Countess").expect("name")), email: None, current_password: Some(password()) };
    update_profile(&mut store, &crypto, &settings, &ctx(NOW), &session.user.id, rename).expect("renamed");
    let wrong = credentials("ada@example.org", "difference-engine");
    assert_eq!(login(&mut store, &crypto, &settings, &ctx(NOW), wrong).unwrap_err(), Error::InvalidCredentials);
    assert!(login(&mut store, &crypto, &settings, &ctx(NOW), credentials("ada@example.org", "analytical-engine-1843")).is_ok());
}

#[test]
fn an_app_added_but_never_confirmed_is_dropped_with_the_password_and_a_reset_keeps_a_confirmed_one() {
    let (mut store, crypto, settings, session) = setup();
    let id = session.user.id.clone();
    let password = Password::presented("analytical-engine-1843");
    mfa::enroll(&mut store, &crypto, &settings, &ctx(NOW), &id, &password, "auth").expect("enrolled");
    let code = mfa::TotpCode::parse("code", "123456").expect("digits");
    mfa::disable(&mut store, &crypto, &settings, &ctx(NOW), &id, &password, None).expect("dropped");
    assert_eq!(mfa::confirm(&mut store, &crypto, &ctx(NOW), &id, &code).unwrap_err(), Error::MfaNotEnrolled);

    // Confirmed between the drop's read and its write: then it needs a code like any other.
    fn confirmed_meanwhile(state: &mut crate::domain::memory::State) {
        for user in state.users.values_mut() {
            user.totp.enabled_at = Some(1);
        }
    }
    mfa::enroll(&mut store, &crypto, &settings, &ctx(NOW), &id, &password, "auth").expect("enrolled");
    store.before_lock_user = Some(confirmed_meanwhile);
    let err = mfa::disable(&mut store, &crypto, &settings, &ctx(NOW), &id, &password, None).unwrap_err();
    assert!(matches!(err, Error::Validation(ref errors) if errors[0].field == "mfa_code"), "{err:?}");
    assert!(store.state.users[&id].totp.enabled_at.is_some(), "still on");
    store.state.users.get_mut(&id).expect("user").totp = crate::domain::ports::TotpRow::default();

    // Changing the password keeps the factor: a password is not a second factor.
    let enrollment = mfa::enroll(&mut store, &crypto, &settings, &ctx(NOW), &id, &password, "auth").expect("enrolled");
    mfa::confirm(&mut store, &crypto, &ctx(NOW), &id, &app_code(&enrollment, NOW)).expect("confirmed");
    let new = Password::new_secret("jacquard-loom-1804").expect("password");
    change_password(&mut store, &crypto, &settings, &ctx(NOW + 5), &id, &password, &new).expect("changed");
    let attempt = credentials("ada@example.org", "jacquard-loom-1804");
    assert_eq!(login(&mut store, &crypto, &settings, &ctx(NOW + 60), attempt).unwrap_err(), Error::MfaRequired);
}

/// An app confirmed while a login with the password alone was between its check and its
/// session: the login is refused (401 mfa_required), as it would have been a moment later.
#[test]
fn a_login_racing_the_confirmation_of_an_app_needs_its_code() {
    let (mut store, crypto, settings, _) = setup();
    fn confirmed_meanwhile(state: &mut crate::domain::memory::State) {
        for user in state.users.values_mut() {
            user.totp.secret_sealed = Some("v1.k1.sealed".into());
            user.totp.enabled_at = Some(1);
        }
    }
    store.before_lock_user = Some(confirmed_meanwhile);
    let sessions = store.state.families.len();
    let attempt = credentials("ada@example.org", "analytical-engine-1843");
    assert_eq!(login(&mut store, &crypto, &settings, &ctx(NOW), attempt).unwrap_err(), Error::MfaRequired);
    assert_eq!(store.state.families.len(), sessions, "no session began");
    assert_eq!(store.events().last(), Some(&("login", false, Some("mfa_required"))));
}
