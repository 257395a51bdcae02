//! Stripe webhooks: signature verification, the inbox (dedup) and ordering.
//!
//! Ordering: every change to a customer's subscriptions happens with the customer's row locked.
//! An event older than the newest event already applied to its subscription (`created` <
//! `last_event_at`) is recorded and skipped. Any other event re-fetches the subscription from
//! Stripe while the lock is held and stores what Stripe says now, so late, duplicated or
//! reordered deliveries all converge on Stripe's state, and a slow handler can never overwrite a
//! newer state with an older one.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::billing::{Ctx, ProfileSync, sync_stripe_profile};
use super::{Billing, Profile, ProfileError, Store, StoreError, StripeSubscription, UserId};
use crate::error::Error;

/// A `customer.updated` whose name or email differs from what we sent this long ago or longer
/// sends auth's back at once (see `profile_from_auth`).
pub const RESEND_AFTER_SECS: i64 = 60;

/// Stripe's default tolerance.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("no signature matches")]
    NoMatch,
    #[error("the signature timestamp is outside the tolerance")]
    Stale,
}

impl From<SignatureError> for Error {
    fn from(err: SignatureError) -> Self {
        Error::WebhookSignature(match err {
            SignatureError::Missing => "The Stripe-Signature header is missing.",
            SignatureError::Malformed => "The Stripe-Signature header is malformed.",
            SignatureError::NoMatch => "No signature in Stripe-Signature matches the payload.",
            SignatureError::Stale => "The Stripe-Signature timestamp is too old (or in the future).",
        })
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

/// Checks `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` against every secret: HMAC-SHA-256
/// over `"<t>.<payload>"`, compared in constant time; the timestamp within `tolerance` of `now`.
pub fn verify_signature(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[&str],
    now: i64,
    tolerance: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(value.parse().map_err(|_| SignatureError::Malformed)?);
            }
            "v1" => {
                // A v1 value that is not 32 bytes of hex can never match; skip it.
                if let Some(bytes) = hex_decode(value).filter(|b| b.len() == 32) {
                    signatures.push(bytes);
                }
            }
            _ => {} // v0 and future schemes
        }
        if signatures.len() > 16 {
            return Err(SignatureError::Malformed);
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoMatch);
    }
    let mut matched = false;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            continue;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        let expected = mac.finalize().into_bytes();
        for signature in &signatures {
            // Constant time; keep looping so timing does not tell which one matched.
            matched |= tokens::constant_time_eq(&expected, signature);
        }
    }
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    // abs_diff: `(now - timestamp).abs()` overflows for timestamps near i64::MIN (a panic with
    // overflow checks, and without them i64::MIN.abs() stays negative and passed as fresh).
    if now.abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    Ok(timestamp)
}

/// The parts of a Stripe event we use.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub created: i64,
    pub object: Value,
}

impl Event {
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| Error::bad_request("invalid_event", "The event is not valid JSON."))?;
        let id = value.get("id").and_then(Value::as_str).filter(|s| super::is_stripe_id(s));
        let kind = value.get("type").and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 255);
        let created = value.get("created").and_then(Value::as_i64);
        let object = value.get("data").and_then(|d| d.get("object")).filter(|o| o.is_object());
        match (id, kind, created, object) {
            (Some(id), Some(kind), Some(created), Some(object)) => {
                Ok(Self { id: id.into(), kind: kind.into(), created, object: object.clone() })
            }
            _ => Err(Error::bad_request("invalid_event", "The event lacks id, type, created or data.object.")),
        }
    }

    fn object_str(&self, field: &str) -> Option<&str> {
        match self.object.get(field) {
            Some(Value::String(s)) => Some(s.as_str()),
            // An expanded object: {"id": ...}
            Some(Value::Object(o)) => o.get("id").and_then(Value::as_str),
            _ => None,
        }
    }
}

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already in the inbox: acknowledged, not applied again.
    Duplicate,
    /// Older than what is already applied.
    Stale,
    Ignored(&'static str),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::Ignored(reason) => reason,
        }
    }
}

/// Records the event in the inbox and applies it, in one transaction: a failure leaves no trace,
/// so Stripe's retry applies it; a redelivery hits the inbox's primary key.
pub fn handle(ctx: &Ctx<'_>, event: &Event) -> Result<Outcome, Error> {
    let store = ctx.store;
    store.begin()?;
    let object_id = event.object_str("id");
    match store.insert_event(&event.id, &event.kind, event.created, object_id) {
        Ok(()) => {}
        Err(StoreError::Duplicate { .. }) => {
            store.rollback();
            return Ok(Outcome::Duplicate);
        }
        Err(err) => {
            store.rollback();
            return Err(err.into());
        }
    }
    let outcome = match apply(ctx, event) {
        Ok(outcome) => outcome,
        Err(err) => {
            store.rollback();
            return Err(err);
        }
    };
    let finished = store.set_event_outcome(&event.id, outcome.as_str()).and_then(|()| store.commit());
    if let Err(err) = finished {
        store.rollback();
        return Err(err.into());
    }
    Ok(outcome)
}

fn apply(ctx: &Ctx<'_>, event: &Event) -> Result<Outcome, Error> {
    let (store, stripe, now) = (ctx.store, ctx.stripe, ctx.now);
    match event.kind.as_str() {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed"
        | "customer.subscription.pending_update_applied"
        | "customer.subscription.pending_update_expired" => {
            let (Some(sub_id), Some(customer)) = (event.object_str("id"), event.object_str("customer")) else {
                return Ok(Outcome::Ignored("malformed_object"));
            };
            sync_subscription(store, stripe, event, sub_id, customer, now)
        }
        // `invoice.payment_succeeded` is what older API versions (and localstripe) send. A
        // completed Checkout page names the subscription it made, whose own events may come later.
        "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" | "checkout.session.completed" => {
            let (Some(sub_id), Some(customer)) = (event.object_str("subscription"), event.object_str("customer")) else {
                return Ok(Outcome::Ignored("no_subscription"));
            };
            sync_subscription(store, stripe, event, sub_id, customer, now)
        }
        "customer.deleted" => {
            let Some(customer) = event.object_str("id") else {
                return Ok(Outcome::Ignored("malformed_object"));
            };
            customer_deleted(store, stripe, event, customer, now)
        }
        "invoice.created" | "invoice.upcoming" => {
            let Some(customer) = event.object_str("customer") else {
                return Ok(Outcome::Ignored("malformed_object"));
            };
            profile_from_auth(ctx, customer, None)
        }
        // Someone changed the customer at Stripe (the dashboard, another integration): when the
        // name or email is no longer what we sent, auth's are sent back. Our own updates come
        // back as this event too, with what we sent: nothing to do then.
        "customer.updated" => {
            let Some(customer) = event.object_str("id") else {
                return Ok(Outcome::Ignored("malformed_object"));
            };
            let text = |field: &str| event.object.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
            let at_stripe = Profile { id: String::new(), name: text("name"), email: text("email"), email_verified: false };
            profile_from_auth(ctx, customer, Some(&at_stripe))
        }
        _ => Ok(Outcome::Ignored("ignored_type")),
    }
}

/// Brings the customer's name and email at Stripe up to date from auth. For an invoice that is
/// coming (`invoice.upcoming`, days before a renewal) or made (`invoice.created`; a renewal's
/// stays a draft for about an hour), so that Stripe finalizes and mails it with the current ones,
/// also for a user who changed them and has not used billing since. `at_stripe`: what a
/// `customer.updated` says Stripe now holds; when it is not what we last sent, it is recorded as
/// what Stripe holds, so that auth's profile is sent back. Auth unavailable is a 503, so Stripe
/// retries.
fn profile_from_auth(ctx: &Ctx<'_>, stripe_customer: &str, at_stripe: Option<&Profile>) -> Result<Outcome, Error> {
    let Some(customer_id) = ctx.store.lock_customer_by_stripe_id(stripe_customer)? else {
        return Ok(Outcome::Ignored("unknown_customer"));
    };
    let Ok(user) = UserId::parse(&customer_id) else {
        return Ok(Outcome::Ignored("unknown_customer"));
    };
    if let Some(at_stripe) = at_stripe {
        let holds = ctx.stripe.profile_digest(at_stripe);
        let sent = ctx.store.stripe_profile(user.as_str())?;
        if sent.as_ref().is_some_and(|sent| sent.digest == holds) {
            return Ok(Outcome::Ignored("profile_current"));
        }
        // Recorded as what Stripe holds, so that the sync below (or, right after one of ours,
        // the next read or invoice event) sends auth's profile back.
        ctx.store.set_stripe_profile_digest(user.as_str(), &holds, ctx.now)?;
        // Within a minute of our own update, Stripe holding something else is most likely its
        // own spelling of what we sent (the echo of our update): sending it again at once could
        // go back and forth for ever.
        if sent.is_some_and(|sent| ctx.now.saturating_sub(sent.sent_at) < RESEND_AFTER_SECS) {
            return Ok(Outcome::Ignored("recently_sent"));
        }
    }
    // Auth's answer now, not a cached copy up to a minute old: the change may be that recent.
    let lookup = match ctx.profiles.current_profile(user.as_str()) {
        Ok(lookup) => lookup,
        Err(ProfileError::NotFound) => return Ok(Outcome::Ignored("profile_not_found")),
        Err(err) => return Err(err.into()),
    };
    match sync_stripe_profile(ctx, "stripe", &user, stripe_customer, &lookup)? {
        ProfileSync::Synced => Ok(Outcome::Applied),
        ProfileSync::Current => Ok(Outcome::Ignored("profile_current")),
        ProfileSync::NotFresh => Err(Error::AuthUnavailable { retry_after: 5 }),
    }
}

fn sync_subscription(
    store: &dyn Store,
    stripe: &dyn Billing,
    event: &Event,
    sub_id: &str,
    stripe_customer: &str,
    now: i64,
) -> Result<Outcome, Error> {
    let Some(customer_id) = store.lock_customer_by_stripe_id(stripe_customer)? else {
        return Ok(Outcome::Ignored("unknown_customer"));
    };
    let mut existing = store.subscription_by_stripe_id(sub_id)?;
    if existing.is_none() {
        // Created by us, but the create call has not recorded Stripe's id yet (or never will).
        let local_id = event.object.get("metadata").and_then(|m| m.get("subscription_id")).and_then(Value::as_str);
        if let Some(local_id) = local_id {
            existing = store
                .subscription_by_id(local_id)?
                .filter(|s| s.customer_id == customer_id && s.stripe_subscription_id.is_none());
        }
    }
    if let Some(current) = &existing
        && event.created < current.last_event_at {
            return Ok(Outcome::Stale);
        }
    let remote = match stripe.subscription(sub_id)? {
        Some(remote) => remote,
        None if event.kind == "customer.subscription.deleted" => {
            match StripeSubscription::from_json(&event.object) {
                Some(from_event) => from_event,
                None => return Ok(Outcome::Ignored("malformed_object")),
            }
        }
        None => return Ok(Outcome::Ignored("unknown_at_stripe")),
    };
    if remote.customer != stripe_customer {
        return Ok(Outcome::Ignored("customer_mismatch"));
    }
    if super::billing::store_stripe_state(store, &customer_id, existing, &remote, event.created, now)?.is_none() {
        return Ok(Outcome::Ignored("duplicate_live_price"));
    }
    store.audit(
        now,
        "stripe",
        "subscription.synced",
        Some(&customer_id),
        &format!("event={} type={} stripe_subscription={sub_id} status={}", event.id, event.kind, remote.status.as_str()),
    )?;
    Ok(Outcome::Applied)
}

fn customer_deleted(
    store: &dyn Store,
    stripe: &dyn Billing,
    event: &Event,
    stripe_customer: &str,
    now: i64,
) -> Result<Outcome, Error> {
    let Some(customer_id) = store.lock_customer_by_stripe_id(stripe_customer)? else {
        return Ok(Outcome::Ignored("unknown_customer"));
    };
    if stripe.customer_exists(stripe_customer)? {
        return Ok(Outcome::Ignored("customer_still_exists"));
    }
    store.delete_customer(&customer_id)?;
    store.delete_provisioning(&customer_id)?;
    store.audit(
        now,
        "stripe",
        "customer.deleted_at_stripe",
        Some(&customer_id),
        &format!("event={} stripe_customer={stripe_customer}", event.id),
    )?;
    Ok(Outcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::billing::tests::{Fakes, one};
    use crate::domain::fake::FakeProfiles;
    use crate::domain::billing::{create_checkout_session, create_customer, subscribe};
    use crate::domain::{AreaIds, CheckoutUrls, NewSubscription, PriceId, SubscriptionStatus, UserId};

    fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(payload);
        crate::domain::billing::hex(&mac.finalize().into_bytes())
    }

    #[test]
    fn signatures() {
        let payload = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        let good = sign("whsec_a", now, payload);
        let header = format!("t={now},v1={good}");
        assert_eq!(verify_signature(Some(&header), payload, &["whsec_a"], now, 300), Ok(now));
        // Rotation: the second secret matches.
        assert!(verify_signature(Some(&header), payload, &["whsec_new", "whsec_a"], now, 300).is_ok());
        // Several v1 values: one good is enough.
        let several = format!("t={now},v1={},v1={good},v0=abc", "00".repeat(32));
        assert!(verify_signature(Some(&several), payload, &["whsec_a"], now, 300).is_ok());
        assert_eq!(verify_signature(None, payload, &["whsec_a"], now, 300), Err(SignatureError::Missing));
        assert_eq!(verify_signature(Some("garbage"), payload, &["whsec_a"], now, 300), Err(SignatureError::Malformed));
        assert_eq!(verify_signature(Some(&header), payload, &["whsec_b"], now, 300), Err(SignatureError::NoMatch));
        assert_eq!(verify_signature(Some(&header), b"{}", &["whsec_a"], now, 300), Err(SignatureError::NoMatch));
        assert_eq!(verify_signature(Some(&header), payload, &["whsec_a"], now + 301, 300), Err(SignatureError::Stale));
        assert_eq!(verify_signature(Some(&header), payload, &["whsec_a"], now - 301, 300), Err(SignatureError::Stale));
        assert_eq!(verify_signature(Some(&format!("t={now}")), payload, &["whsec_a"], now, 300), Err(SignatureError::NoMatch));
        // Timestamps at the ends of i64, signed with the right secret: stale, never a panic.
        for t in [i64::MIN, i64::MIN + 1, i64::MIN.wrapping_add(now), i64::MAX, 0, -1] {
            let header = format!("t={t},v1={}", sign("whsec_a", t, payload));
            assert_eq!(verify_signature(Some(&header), payload, &["whsec_a"], now, 300), Err(SignatureError::Stale), "t={t}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_headers_never_panic(header in "\\PC{0,200}", payload in proptest::collection::vec(0u8..255, 0..64)) {
            let _ = verify_signature(Some(&header), &payload, &["whsec_x"], 0, 300);
        }
    }

    fn event(id: &str, kind: &str, created: i64, object: Value) -> Event {
        Event { id: id.into(), kind: kind.into(), created, object }
    }

    /// Customer u1 subscribed to price_a: the Stripe ids of its subscription and of itself.
    fn subscribed_customer(fakes: &Fakes) -> (String, String) {
        let ctx = fakes.ctx(1000);
        let user = UserId::parse("u1").unwrap();
        create_customer(&ctx, &user, &AreaIds::parse(&[1]).unwrap()).unwrap();
        let sub = subscribe(&ctx, &user, &one(&PriceId::parse("price_a").unwrap()), 0).unwrap().subscription;
        let cus = fakes.store.customer("u1").unwrap().unwrap().stripe_customer_id.unwrap();
        (sub.stripe_subscription_id.unwrap(), cus)
    }

    #[test]
    fn duplicates_and_reordering_converge_on_stripes_state() {
        let fakes = Fakes::up();
        let (store, stripe) = (&fakes.store, &fakes.stripe);
        let (sid, cus) = subscribed_customer(&fakes);
        let handle = |event: &Event, now: i64| handle(&fakes.ctx(now), event);
        // Stripe moves on: past_due at 2000, then active again at 3000.
        stripe.set_status(&sid, SubscriptionStatus::Active);
        let newer = event("evt_2", "customer.subscription.updated", 3000, serde_json::json!({"id": sid, "customer": cus}));
        let older = event("evt_1", "customer.subscription.updated", 2000, serde_json::json!({"id": sid, "customer": cus}));
        assert_eq!(handle(&newer, 3001).unwrap(), Outcome::Applied);
        assert_eq!(handle(&newer, 3002).unwrap(), Outcome::Duplicate);
        assert_eq!(handle(&older, 3003).unwrap(), Outcome::Stale);
        let stored = store.subscription_by_stripe_id(&sid).unwrap().unwrap();
        assert_eq!(stored.status, SubscriptionStatus::Active);
        assert_eq!(stored.last_event_at, 3000);
        // Unknown types are acknowledged and ignored.
        let other = event("evt_3", "charge.refunded", 3000, serde_json::json!({"id": "ch_1"}));
        assert_eq!(handle(&other, 3004).unwrap(), Outcome::Ignored("ignored_type"));
    }

    #[test]
    fn an_invoice_event_brings_stripes_profile_up_to_date_from_auth() {
        let fakes = Fakes::up();
        let (_, cus) = subscribed_customer(&fakes);
        let invoice = |id: &str| event(id, "invoice.created", 2000, serde_json::json!({"id": "in_1", "customer": cus, "status": "draft"}));
        // Nothing changed at auth.
        assert_eq!(handle(&fakes.ctx(2001), &invoice("evt_i1")).unwrap(), Outcome::Ignored("profile_current"));
        assert!(fakes.stripe.profile_updates.borrow().is_empty());
        // The user changed their email at auth and has not used billing since.
        *fakes.profiles.email_domain.borrow_mut() = "new.example".into();
        let upcoming = event("evt_i2", "invoice.upcoming", 2000, serde_json::json!({"customer": cus}));
        assert_eq!(handle(&fakes.ctx(2002), &upcoming).unwrap(), Outcome::Applied);
        assert_eq!(fakes.stripe.profile_updates.borrow().len(), 1);
        assert_eq!(fakes.stripe.profile_updates.borrow()[0].2, "u1@new.example");
        assert_eq!(handle(&fakes.ctx(2003), &invoice("evt_i3")).unwrap(), Outcome::Ignored("profile_current"));
        // Another change while auth is down: 503 and no inbox row, so Stripe's retry sends it.
        *fakes.profiles.email_domain.borrow_mut() = "newer.example".into();
        let down = FakeProfiles::down();
        let ctx = Ctx { profiles: &down, ..fakes.ctx(2004) };
        assert_eq!(handle(&ctx, &invoice("evt_i4")).unwrap_err().status(), 503);
        assert_eq!(handle(&fakes.ctx(2005), &invoice("evt_i4")).unwrap(), Outcome::Applied);
        assert_eq!(fakes.stripe.profile_updates.borrow()[1].2, "u1@newer.example");
        // A user deleted at auth, or a customer we do not know: acknowledged, nothing sent.
        let gone = FakeProfiles::users_gone();
        assert_eq!(handle(&Ctx { profiles: &gone, ..fakes.ctx(2006) }, &invoice("evt_i5")).unwrap(), Outcome::Ignored("profile_not_found"));
        let stranger = event("evt_i6", "invoice.created", 2000, serde_json::json!({"id": "in_2", "customer": "cus_other"}));
        assert_eq!(handle(&fakes.ctx(2007), &stranger).unwrap(), Outcome::Ignored("unknown_customer"));
        assert_eq!(fakes.stripe.profile_updates.borrow().len(), 2);
    }

    #[test]
    fn a_change_made_at_stripe_is_put_back_from_auth_and_the_echo_of_ours_is_not() {
        let fakes = Fakes::up();
        let (_, cus) = subscribed_customer(&fakes);
        let updated = |id: &str, name: &str, email: &str| {
            event(id, "customer.updated", 2000, serde_json::json!({"id": cus, "name": name, "email": email}))
        };
        let sent = || fakes.stripe.profile_updates.borrow().iter().map(|(_, name, email)| format!("{name} <{email}>")).collect::<Vec<_>>();
        // What we sent, coming back: nothing to do.
        assert_eq!(handle(&fakes.ctx(2001), &updated("evt_c1", "Name u1", "u1@example.org")).unwrap(), Outcome::Ignored("profile_current"));
        assert!(sent().is_empty());
        // Changed in Stripe's dashboard: auth's name and email are sent back.
        assert_eq!(handle(&fakes.ctx(2002), &updated("evt_c2", "Name u1", "billing@elsewhere.example")).unwrap(), Outcome::Applied);
        assert_eq!(sent(), ["Name u1 <u1@example.org>"]);
        // Seconds after our update, Stripe showing its own spelling of it is recorded and not
        // answered with another update (which could go back and forth).
        assert_eq!(handle(&fakes.ctx(2010), &updated("evt_c3", "NAME U1", "u1@example.org")).unwrap(), Outcome::Ignored("recently_sent"));
        assert_eq!(sent().len(), 1);
        // The next invoice event sends auth's again.
        let invoice = event("evt_c4", "invoice.created", 2100, serde_json::json!({"id": "in_1", "customer": cus}));
        assert_eq!(handle(&fakes.ctx(2100), &invoice).unwrap(), Outcome::Applied);
        assert_eq!(sent().len(), 2);
    }

    /// A Checkout page's subscription reaches the mirror from its `checkout.session.completed`,
    /// under the id chosen when the page was made, and its trial counts as the user's one.
    #[test]
    fn a_paid_checkout_page_brings_its_subscription_and_uses_up_the_trial() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let user = UserId::parse("u1").unwrap();
        let customer = create_customer(&ctx, &user, &AreaIds::parse(&[1]).unwrap()).unwrap();
        let cus = customer.stripe_customer_id.unwrap();
        let urls = CheckoutUrls { success: "https://app.example.org/done", cancel: None };
        create_checkout_session(&ctx, &user, &one(&PriceId::parse("price_a").unwrap()), 7, urls).unwrap();
        // What the paid page makes at Stripe, with the session's metadata.
        let local_id = fakes.stripe.checkout_sessions.borrow()[0].local_id.clone();
        let order = one(&PriceId::parse("price_a").unwrap());
        let made = NewSubscription { customer: &cus, order: &order, promotion: None, trial_days: Some(7), user_id: "u1", local_id: &local_id };
        let sid = fakes.stripe.create_subscription(&made, "k").unwrap().id;

        let completed = event("evt_c", "checkout.session.completed", 1500, serde_json::json!({"id": "cs_test_1", "customer": cus, "subscription": sid}));
        assert_eq!(handle(&fakes.ctx(1501), &completed).unwrap(), Outcome::Applied);
        let mirrored = fakes.store.subscription_by_stripe_id(&sid).unwrap().unwrap();
        assert_eq!((mirrored.id.as_str(), mirrored.status), (local_id.as_str(), SubscriptionStatus::Trialing));
        assert!(fakes.store.trial_granted("u1").unwrap());
        // The subscription's own created event, older than the one applied, changes nothing.
        let created = event("evt_d", "customer.subscription.created", 1400, serde_json::json!({"id": sid, "customer": cus}));
        assert_eq!(handle(&fakes.ctx(1502), &created).unwrap(), Outcome::Stale);
        // A page in payment mode made no subscription.
        let payment = event("evt_e", "checkout.session.completed", 1600, serde_json::json!({"id": "cs_test_2", "customer": cus, "subscription": null}));
        assert_eq!(handle(&fakes.ctx(1601), &payment).unwrap(), Outcome::Ignored("no_subscription"));
    }

    #[test]
    fn a_failed_application_leaves_no_inbox_row() {
        let fakes = Fakes::up();
        let stripe = &fakes.stripe;
        let (sid, cus) = subscribed_customer(&fakes);
        let e = event("evt_9", "customer.subscription.updated", 2000, serde_json::json!({"id": sid, "customer": cus}));
        stripe.down.set(true);
        assert_eq!(handle(&fakes.ctx(2001), &e).unwrap_err().status(), 503);
        stripe.down.set(false);
        assert_eq!(handle(&fakes.ctx(2002), &e).unwrap(), Outcome::Applied);
    }
}
