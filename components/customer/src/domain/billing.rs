//! Customers, areas, subscriptions and invoices: the rules, over the ports of `domain`.
//!
//! The invariants: a user has at most one Stripe customer and every Stripe customer we create
//! ends up in a row (crash, retry or concurrency notwithstanding); a customer has at most one live
//! subscription per price; every change to a customer's subscriptions happens while its row is
//! locked, so changes and webhook applications are applied in the order they reached Stripe.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{
    AreaIds, Billing, CheckoutSession, CheckoutState, CheckoutUrls, Claim, Customer, InvoicePage, InvoicePreview, NewStripeCustomer, PaymentMethodId, PaymentMethodSummary,
    ItemChange, PendingPayment, PriceId, Profile, ProfileLookup, ProfileSource, Profiles, Quantity, SetupIntent, Store, StoreError, StripeCustomerRef,
    BillingAddress, NewSubscription, StripeError, StripeInvoice, Subscription, SubscriptionOrder, SubscriptionStatus, TaxId, NewTaxId, UserId,
};
use crate::error::Error;

/// How long one create may hold a user's provisioning lease (auth + Stripe with retries fit well
/// within it); after it, another request may resume the creation.
pub const PROVISIONING_LEASE_SECS: i64 = 60;

/// The ports and the time of one request.
pub struct Ctx<'a> {
    pub store: &'a dyn Store,
    pub stripe: &'a dyn Billing,
    pub profiles: &'a dyn Profiles,
    pub now: i64,
}

/// An id as part of a Stripe Idempotency-Key (at most 255 characters in all): the id itself when
/// short, else its SHA-256.
pub fn key_part(id: &str) -> String {
    if id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        id.to_string()
    } else {
        hex(&Sha256::digest(id.as_bytes()))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stripe Idempotency-Key of the customer create: our user id, when this provisioning started
/// (Unix milliseconds) and the attempt number. (Without `started`, a user who deleted their customer and comes back
/// within Stripe's 24 h would get the deleted customer's create replayed.)
pub fn customer_create_key(user: &UserId, started: i64, attempt: u32) -> String {
    format!("customer-create:{}:{started}:{attempt}", key_part(user.as_str()))
}

pub fn subscription_create_key(local_id: &str) -> String {
    format!("subscription-create:{local_id}")
}

/// Stripe Idempotency-Key of a change to a subscription (`cancel`, `resume`, `price`): the
/// subscription and a fresh id. Our client's retries of one call repeat it; a later change gets
/// its own, so that cancelling again after a resume within 24 h is not answered with the first
/// cancel's replay (which Stripe would not apply).
pub fn subscription_change_key(local_id: &str, change: &str) -> String {
    format!("subscription-{change}:{local_id}:{}", new_local_id())
}

/// Stripe Idempotency-Key of a profile update: the customer and a fresh id. The client's retries
/// of one update repeat it; every other update gets its own, even one sending a profile again
/// within the same second (Stripe would replay the first answer to a key for 24 h and change
/// nothing). Updates need no key shared between requests: sending a profile twice is harmless.
pub fn profile_update_key(user: &UserId) -> String {
    format!("customer-profile:{}:{}", key_part(user.as_str()), new_local_id())
}

/// HMAC-SHA-256 of a name and an email (the name's length first, so no two pairs share their
/// bytes), hex. Keyed, so that the digests we keep tell nothing without the key.
pub fn profile_digest(key: &[u8], profile: &Profile) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; an empty digest would only make the next read sync again.
        return String::new();
    };
    mac.update(&(profile.name.len() as u64).to_be_bytes());
    mac.update(profile.name.as_bytes());
    mac.update(profile.email.as_bytes());
    hex(&mac.finalize().into_bytes())
}

pub fn new_local_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn customer_exists() -> Error {
    Error::Conflict { code: "customer_exists", detail: "This user already is a customer.".into() }
}

pub fn get_customer(store: &dyn Store, user: &UserId) -> Result<Customer, Error> {
    store.customer(user.as_str())?.ok_or_else(Error::not_a_customer)
}

/// The Stripe customer id of a user's customer (a row without one is a bug: 500).
fn stripe_customer_of(store: &dyn Store, user: &UserId) -> Result<String, Error> {
    get_customer(store, user)?
        .stripe_customer_id
        .ok_or_else(|| Error::internal(format!("customer {user} has no Stripe id")))
}

/// Runs `work` in a transaction and commits; rolls back when `work` or the commit fails.
fn in_transaction<T, E: From<StoreError>>(store: &dyn Store, work: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    store.begin()?;
    match work() {
        Ok(value) => match store.commit() {
            Ok(()) => Ok(value),
            Err(err) => {
                store.rollback();
                Err(err.into())
            }
        },
        Err(err) => {
            store.rollback();
            Err(err)
        }
    }
}

/// Who may become a customer, beyond having an account (the operator's variables).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CustomerPolicy {
    /// `require_verified_email`: only a user whose email auth says is verified, so that Stripe's
    /// receipts and invoices never go to an address its owner has not proved to read.
    pub require_verified_email: bool,
}

/// `POST /customers` with the default policy (anyone with an account): the tests' shorthand.
#[cfg(test)]
pub fn create_customer(ctx: &Ctx<'_>, user: &UserId, areas: &AreaIds) -> Result<Customer, Error> {
    create_customer_with(ctx, user, areas, CustomerPolicy::default())
}

/// `POST /customers`: profile from auth, Stripe customer, then the row.
pub fn create_customer_with(ctx: &Ctx<'_>, user: &UserId, areas: &AreaIds, policy: CustomerPolicy) -> Result<Customer, Error> {
    let store = ctx.store;
    if store.customer(user.as_str())?.is_some() {
        return Err(customer_exists());
    }
    let (attempt, resumed, last_error, started) =
        match store.claim_provisioning(user.as_str(), ctx.now, PROVISIONING_LEASE_SECS)? {
            Claim::Busy => {
                return Err(Error::Busy {
                    code: "customer_creation_in_progress",
                    detail: "This user's customer is being created by another request; retry shortly.".into(),
                });
            }
            Claim::Claimed { attempt, resumed, last_error, started } => (attempt, resumed, last_error, started),
        };
    // Another request may have finished between our first look and the claim.
    if store.customer(user.as_str())?.is_some() {
        store.delete_provisioning(user.as_str())?;
        return Err(customer_exists());
    }
    if resumed {
        telemetry::info(
            "resuming a customer creation",
            &[
                ("customer", user.as_str().into()),
                ("attempt", attempt.into()),
                ("last_error", last_error.as_deref().unwrap_or("none: interrupted").into()),
            ],
        );
    }

    let profile = match profile_from_auth(ctx, user) {
        Ok(profile) => profile,
        Err(err) => {
            store.provisioning_failed(user.as_str(), "auth_unavailable", false)?;
            return Err(err);
        }
    };
    if policy.require_verified_email && !profile.email_verified {
        store.delete_provisioning(user.as_str())?;
        return Err(Error::EmailNotVerified);
    }

    let (stripe_customer, adopted) = match provision_stripe_customer(ctx, user, &profile, started, attempt, resumed) {
        Ok(found) => found,
        Err(err) => {
            if err.is_ambiguous() {
                // Stripe may or may not have created it: the next attempt searches first, then
                // creates under a new key (Stripe keeps even a 500 for the old one).
                store.provisioning_failed(user.as_str(), "stripe_ambiguous", true)?;
            } else {
                // Nothing was created: start clean next time.
                store.delete_provisioning(user.as_str())?;
            }
            return Err(err.into());
        }
    };

    let created = in_transaction(store, || {
        store.insert_customer(user.as_str(), &stripe_customer.id, areas)?;
        // Asked again, with the row written but not committed: see `profile_from_auth`.
        profile_from_auth(ctx, user)?;
        if !adopted {
            // Stripe holds this profile now. (An adopted customer holds an earlier attempt's:
            // without a digest, the next read of the profile sends it the current one.)
            store.set_stripe_profile_digest(user.as_str(), &ctx.stripe.profile_digest(&profile), ctx.now)?;
        }
        store.delete_provisioning(user.as_str())?;
        store.audit(
            ctx.now,
            user.as_str(),
            "customer.created",
            Some(user.as_str()),
            &format!("stripe_customer={} areas={}", stripe_customer.id, areas.as_slice().len()),
        )?;
        // Read back before COMMIT: once committed, the answer must not depend on another statement
        // (a database lost in between would answer 503 for a customer that exists).
        get_customer(store, user)
    });
    match created {
        Err(Error::NotFound { code: "profile_not_found", .. }) => {
            // Erased while we made its Stripe customer: that customer must not outlive the account.
            if let Err(err) = ctx.stripe.delete_customer(&stripe_customer.id) {
                telemetry::error(
                    "Failed to delete the Stripe customer of an account erased during its creation",
                    &[("customer", user.as_str().into()), ("stripe_customer", stripe_customer.id.as_str().into()), ("cause", format!("{err:?}").into())],
                );
            }
            store.delete_provisioning(user.as_str())?;
        }
        // The Stripe customer exists: the next attempt finds and adopts it.
        Err(Error::AuthUnavailable { .. }) => store.provisioning_failed(user.as_str(), "auth_unavailable", false)?,
        _ => {}
    }
    created
}

/// The profile from auth itself, never a cached copy: a customer is made only for an account
/// that exists now (auth unavailable: 503, we cannot tell). `create_customer` asks twice, the
/// second time with the new customer row written but not committed. An erasure deletes the
/// account at auth before it closes billing, and closing billing locks the customer row: if it
/// deleted the account before the second question, the answer is 404 and nothing is kept; if
/// after, its lock waits for our COMMIT and then finds the customer to close. Either way no
/// customer outlives an erasure that raced its creation.
fn profile_from_auth(ctx: &Ctx<'_>, user: &UserId) -> Result<Profile, Error> {
    let lookup = ctx.profiles.current_profile(user.as_str())?;
    if let ProfileSource::StaleCache { .. } = lookup.source {
        return Err(Error::AuthUnavailable { retry_after: 5 });
    }
    Ok(lookup.profile)
}

/// Finds the Stripe customer an earlier attempt created (true: adopted), or creates one.
fn provision_stripe_customer(
    ctx: &Ctx<'_>,
    user: &UserId,
    profile: &Profile,
    started: i64,
    attempt: u32,
    resumed: bool,
) -> Result<(StripeCustomerRef, bool), super::StripeError> {
    if resumed {
        let mut mine: Vec<StripeCustomerRef> = ctx
            .stripe
            .customers_by_email(&profile.email)?
            .into_iter()
            .filter(|c| c.user_id.as_deref() == Some(user.as_str()))
            .collect();
        mine.sort_by_key(|c| (c.created, c.id.clone()));
        if mine.len() > 1 {
            telemetry::warn(
                "several Stripe customers carry this user; adopting the oldest",
                &[("customer", user.as_str().into()), ("count", mine.len().into())],
            );
        }
        if let Some(found) = mine.into_iter().next() {
            telemetry::info(
                "adopting the Stripe customer of an earlier attempt",
                &[("customer", user.as_str().into()), ("stripe_customer", found.id.as_str().into())],
            );
            return Ok((found, true));
        }
    }
    let request = NewStripeCustomer { user_id: user.as_str(), name: &profile.name, email: &profile.email };
    Ok((ctx.stripe.create_customer(&request, &customer_create_key(user, started, attempt))?, false))
}

/// `PATCH /customers/me`.
pub fn update_areas(store: &dyn Store, user: &UserId, areas: &AreaIds, now: i64) -> Result<Customer, Error> {
    with_customer_locked(store, user, || {
        store.replace_areas(user.as_str(), areas)?;
        store.audit(now, user.as_str(), "customer.areas_updated", Some(user.as_str()), &format!("areas={}", areas.as_slice().len()))?;
        // Read back before COMMIT, as in `create_customer`.
        get_customer(store, user)
    })
}

/// What closing a customer did at Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedBilling {
    pub stripe_customer_id: Option<String>,
    pub subscriptions_canceled: u32,
}

/// `DELETE /customers/me`: Stripe first (subscriptions, then the customer), then our rows.
pub fn delete_customer(ctx: &Ctx<'_>, user: &UserId) -> Result<ClosedBilling, Error> {
    // Read under the row's lock, which waits for a creation that inserted the row and has not
    // committed (see `profile_from_auth`): an erasure then finds the customer to close. A
    // plain read would see no row, answer "nothing billed", and leave it behind. The lock is
    // not held across the calls to Stripe.
    let customer = with_customer_locked(ctx.store, user, || get_customer(ctx.store, user))?;
    let mut canceled = 0;
    if let Some(stripe_id) = &customer.stripe_customer_id {
        // First, so that no page can start a subscription while the others are canceled.
        expire_open_checkouts(ctx.stripe, stripe_id)?;
        match ctx.stripe.subscriptions_of(stripe_id) {
            Ok(remote) => {
                for sub in remote.iter().filter(|s| s.status.is_live()) {
                    match ctx.stripe.cancel_now(&sub.id) {
                        Ok(_) => canceled += 1,
                        Err(err) if err.is_not_found() => {}
                        Err(err) => return Err(err.into()),
                    }
                }
            }
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err.into()),
        }
        ctx.stripe.delete_customer(stripe_id)?;
    }
    let store = ctx.store;
    in_transaction(store, || {
        store.delete_customer(user.as_str())?;
        store.delete_provisioning(user.as_str())?;
        store.audit(
            ctx.now,
            user.as_str(),
            "customer.deleted",
            Some(user.as_str()),
            &format!(
                "stripe_customer={} subscriptions_canceled={canceled}",
                customer.stripe_customer_id.as_deref().unwrap_or("-")
            ),
        )
    })?;
    Ok(ClosedBilling { stripe_customer_id: customer.stripe_customer_id, subscriptions_canceled: canceled })
}

pub fn list_subscriptions(store: &dyn Store, user: &UserId) -> Result<Vec<Subscription>, Error> {
    get_customer(store, user)?;
    Ok(store.subscriptions(user.as_str())?)
}

/// Runs `work` in a transaction holding the customer's row lock; rolls back on error.
fn with_customer_locked<T>(
    store: &dyn Store,
    user: &UserId,
    work: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    in_transaction(store, || {
        if !store.lock_customer(user.as_str())? {
            return Err(Error::not_a_customer());
        }
        work()
    })
}

/// A subscription as its owner sees it after subscribing, or reading it alone: our mirror, and
/// the payment waiting for the user (3-D Secure on the first invoice, say), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    pub subscription: Subscription,
    pub pending_payment: Option<PendingPayment>,
}

/// `POST /customers/me/subscriptions`. `trial_days` (`subscription_trial_days`, 0 for none) is
/// given to a user's first subscription only: one who ever had a subscription, here or at
/// Stripe, or a trial (`trial_grants` outlives leaving billing), cannot get a new trial by
/// cancelling, or leaving and coming back, and subscribing again.
pub fn subscribe(ctx: &Ctx<'_>, user: &UserId, order: &SubscriptionOrder, trial_days: u32) -> Result<SubscriptionView, Error> {
    let store = ctx.store;
    let mut made = None;
    start_subscription(ctx, user, order, trial_days, &mut |new| {
        let mut sub = pending_subscription(new.local_id.to_string(), user.as_str(), order.price.as_str().to_string(), order.quantity.get());
        store.insert_subscription(&sub)?;
        let remote = ctx.stripe.create_subscription(new, &subscription_create_key(new.local_id))?;
        sub.apply(&remote);
        store.update_subscription(&sub)?;
        if let Some(days) = new.trial_days {
            store.record_trial(user.as_str(), ctx.now, days)?;
        }
        let detail = format!(
            "subscription={} stripe_subscription={} price={} quantity={} status={} trial_days={} promotion={}",
            sub.id,
            remote.id,
            order.price.as_str(),
            sub.quantity,
            sub.status.as_str(),
            new.trial_days.unwrap_or(0),
            new.promotion.unwrap_or("none")
        );
        store.audit(ctx.now, user.as_str(), "subscription.created", Some(user.as_str()), &detail)?;
        made = Some(SubscriptionView { subscription: sub, pending_payment: remote.pending_payment });
        Ok(())
    })?;
    made.ok_or_else(|| Error::internal("subscribe: started without a subscription"))
}

/// `POST /customers/me/checkout-sessions`: the same order as [`subscribe`], checked the same way
/// (a live subscription to the price is 409, the first one gets the trial, the promotion code is
/// looked up), paid on Stripe's hosted page instead of with the card on file. The subscription
/// the page makes reaches the mirror through its webhooks, under the id chosen here. One page at
/// a time: [`start_subscription`] expires the customer's open ones first.
pub fn create_checkout_session(
    ctx: &Ctx<'_>,
    user: &UserId,
    order: &SubscriptionOrder,
    trial_days: u32,
    urls: CheckoutUrls<'_>,
) -> Result<CheckoutSession, Error> {
    let mut made = None;
    start_subscription(ctx, user, order, trial_days, &mut |new| {
        let key = format!("checkout-session:{}", new.local_id);
        let session = ctx.stripe.create_checkout_session(new, urls, &key)?;
        let detail = format!(
            "checkout_session={} subscription={} price={} quantity={} trial_days={} promotion={}",
            session.id,
            new.local_id,
            order.price.as_str(),
            order.quantity.get(),
            new.trial_days.unwrap_or(0),
            new.promotion.unwrap_or("none")
        );
        ctx.store.audit(ctx.now, user.as_str(), "checkout.session_created", Some(user.as_str()), &detail)?;
        made = Some(session);
        Ok(())
    })?;
    made.ok_or_else(|| Error::internal("checkout: started without a session"))
}

/// A Checkout session as its owner's success page reads it: Stripe's state of the session, and
/// once the page is paid, its subscription, brought into the mirror now if no webhook has yet
/// (Stripe's advice: fulfil on the success page and in the webhook, whichever comes first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutView {
    pub session: CheckoutState,
    pub subscription: Option<Subscription>,
}

/// `GET /customers/me/checkout-sessions/{id}`: another customer's session is 404, as is one
/// Stripe does not know.
pub fn checkout_session(ctx: &Ctx<'_>, user: &UserId, id: &str) -> Result<CheckoutView, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let session = ctx
        .stripe
        .checkout_session(id)?
        .filter(|session| session.customer.as_deref() == Some(stripe_customer.as_str()))
        .ok_or_else(|| Error::not_found("No such checkout session."))?;
    let subscription = match &session.subscription {
        Some(stripe_id) if session.status == "complete" => bring_subscription(ctx, user, &stripe_customer, stripe_id)?,
        _ => None,
    };
    Ok(CheckoutView { session, subscription })
}

/// The caller's subscription `stripe_id` in the mirror with Stripe's current state: updated if
/// there, inserted if not (as its webhook would), under the customer's lock so that the webhook
/// and this never insert it twice. None when Stripe has it for another customer, or when another
/// live subscription to its price is mirrored (logged: a page paid twice).
fn bring_subscription(ctx: &Ctx<'_>, user: &UserId, stripe_customer: &str, stripe_id: &str) -> Result<Option<Subscription>, Error> {
    let store = ctx.store;
    with_customer_locked(store, user, || {
        let Some(remote) = ctx.stripe.subscription(stripe_id)?.filter(|remote| remote.customer == stripe_customer) else {
            return Ok(None);
        };
        let existing = store.subscription_by_stripe_id(stripe_id)?;
        if existing.as_ref().is_some_and(|sub| sub.customer_id != user.as_str()) {
            return Ok(None);
        }
        let Some(sub) = store_stripe_state(store, user.as_str(), existing, &remote, 0, ctx.now)? else {
            return Ok(None);
        };
        let detail = format!("stripe_subscription={stripe_id} status={} source=checkout_page", remote.status.as_str());
        store.audit(ctx.now, user.as_str(), "subscription.synced", Some(user.as_str()), &detail)?;
        Ok(Some(sub))
    })
}

/// Stores Stripe's state of a subscription of `customer_id` in the mirror, as its webhook and a
/// success page's read both do: into `existing` when there is a row, else into a new one (its
/// trial, if any, recorded as the user's one). `event_created`: the Stripe event that brought it
/// (0 for a read), so that older events are then skipped as stale. None when another live
/// subscription to its price is already mirrored (logged: a price paid twice at Stripe).
pub(super) fn store_stripe_state(
    store: &dyn Store,
    customer_id: &str,
    existing: Option<Subscription>,
    remote: &super::StripeSubscription,
    event_created: i64,
    now: i64,
) -> Result<Option<Subscription>, Error> {
    // Also when a subscription mirrored on another price is moved (in Stripe's dashboard or
    // portal) onto a price another live one has: its row then keeps its last state until either
    // ends, rather than an error that Stripe would retry for days, holding up nothing but
    // itself and risking the endpoint's being disabled.
    let second_live = |constraint: String| {
        telemetry::warn(
            "cannot mirror a second live subscription to one price",
            &[
                ("stripe_subscription", remote.id.clone().into()),
                ("customer", customer_id.to_string().into()),
                ("constraint", constraint.into()),
            ],
        );
        Ok(None)
    };
    if let Some(mut sub) = existing {
        sub.apply(remote);
        sub.last_event_at = sub.last_event_at.max(event_created);
        return match store.update_subscription(&sub) {
            Ok(()) => Ok(Some(sub)),
            Err(StoreError::Duplicate { constraint }) => second_live(constraint),
            Err(err) => Err(err.into()),
        };
    }
    let mut sub = mirror_subscription(store, customer_id, remote)?;
    sub.last_event_at = event_created;
    match store.insert_subscription(&sub) {
        Ok(()) => {}
        Err(StoreError::Duplicate { constraint }) => return second_live(constraint),
        Err(err) => return Err(err.into()),
    }
    record_trial_of(store, customer_id, remote, now)?;
    Ok(Some(sub))
}

/// Closes the customer's Checkout pages still open: none can be paid afterwards. One completed or
/// expired since the list is skipped; a customer Stripe no longer knows has none.
fn expire_open_checkouts(stripe: &dyn Billing, customer: &str) -> Result<(), Error> {
    let open = match stripe.open_checkout_sessions(customer) {
        Ok(open) => open,
        Err(err) if err.is_not_found() => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    for id in open {
        match stripe.expire_checkout_session(&id) {
            Ok(()) | Err(StripeError::InvalidRequest { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// What [`subscribe`] and [`create_checkout_session`] share: under the customer's lock, the order
/// is checked against the mirror and Stripe, the trial decided, the promotion code looked up, the
/// customer's Checkout pages still open expired and the profile sent to Stripe; then `start`
/// makes the subscription (or the page that will) from the [`NewSubscription`]. A live
/// subscription to the price found at Stripe and not yet mirrored (an interrupted earlier
/// request, or one made outside this API) is adopted instead: 409.
///
/// `start` is a `dyn` closure so that this function is compiled once, not once per caller (the
/// component's size is budgeted).
fn start_subscription(
    ctx: &Ctx<'_>,
    user: &UserId,
    order: &SubscriptionOrder,
    trial_days: u32,
    start: &mut dyn FnMut(&NewSubscription<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let price = &order.price;
    // A deleted account must not start paying: its access token outlives it (up to 15 min), its
    // profile does not (gone at auth, and from our cache after `profile_cache_ttl_secs`). Auth
    // down: a cached profile (even stale) lets the subscription through, none is a 503.
    let profile = ctx.profiles.profile(user.as_str())?;
    let store = ctx.store;
    let started = with_customer_locked(store, user, || {
        let stripe_customer = stripe_customer_of(store, user)?;
        let local = store.subscriptions(user.as_str())?;
        if local.iter().any(|s| s.status.is_live() && s.price_id == price.as_str()) {
            return Err(crate::error::conflict_for_constraint("uq_subscriptions_live_price"));
        }
        let remotes = ctx.stripe.subscriptions_of(&stripe_customer)?;
        let trial = (trial_days > 0 && local.is_empty() && remotes.is_empty() && !store.trial_granted(user.as_str())?).then_some(trial_days);
        // A subscription created by an interrupted earlier request (or outside this API) that no
        // webhook has brought in yet: adopt it instead of creating a duplicate.
        for remote in remotes {
            if !remote.status.is_live() || remote.price_id.as_deref() != Some(price.as_str()) {
                continue;
            }
            if store.subscription_by_stripe_id(&remote.id)?.is_some() {
                continue;
            }
            let sub = mirror_subscription(store, user.as_str(), &remote)?;
            store.insert_subscription(&sub)?;
            record_trial_of(store, user.as_str(), &remote, ctx.now)?;
            store.audit(ctx.now, user.as_str(), "subscription.adopted", Some(user.as_str()), &format!("stripe_subscription={}", remote.id))?;
            return Ok(Err(sub.id));
        }
        // The code the user typed, as Stripe's id; one Stripe does not know (or no longer offers)
        // is refused before anything is made.
        let promotion = match &order.promotion_code {
            Some(code) => Some(ctx.stripe.promotion_code_id(code.as_str())?.ok_or_else(|| {
                Error::field("promotion_code", "not_found", "There is no active promotion code by that name.")
            })?),
            None => None,
        };
        // One purchase at a time: a Checkout page still open (another tab, an earlier attempt)
        // could otherwise be paid after this subscription starts, for the same price or not.
        expire_open_checkouts(ctx.stripe, &stripe_customer)?;
        // The first invoice is made with the subscription: it carries the current name and
        // email. (Should the subscription fail, the digest rolls back with it and the next read
        // sends the profile once more.)
        sync_stripe_profile_or_log(ctx, user, &stripe_customer, &profile);
        let local_id = new_local_id();
        let new = NewSubscription {
            customer: &stripe_customer,
            order,
            promotion: promotion.as_deref(),
            trial_days: trial,
            user_id: user.as_str(),
            local_id: &local_id,
        };
        start(&new).map(Ok)
    })?;
    // The adoption is committed before the conflict is answered.
    started.map_err(|adopted| Error::Conflict {
        code: "already_subscribed",
        detail: format!("There already is a live subscription to this price ({adopted}); it is now listed under /customers/me/subscriptions."),
    })
}

/// `GET /customers/me/subscriptions/{id}`: the mirror, and for a subscription whose payment is
/// due (`incomplete`, `past_due`, `unpaid`) the payment waiting for the user, read from Stripe,
/// so a user who closed the page before 3-D Secure can finish it. Stripe down then is 503: a
/// missing `pending_payment` would tell the client that nothing waits.
pub fn subscription_view(ctx: &Ctx<'_>, user: &UserId, id: &str) -> Result<SubscriptionView, Error> {
    let subscription = ctx
        .store
        .subscription(user.as_str(), id)?
        .ok_or_else(|| Error::not_found("No such subscription."))?;
    let pending_payment = match (&subscription.stripe_subscription_id, subscription.status) {
        (Some(stripe_id), SubscriptionStatus::Incomplete | SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid) => {
            ctx.stripe.subscription_with_payment(stripe_id)?.and_then(|remote| remote.pending_payment)
        }
        _ => None,
    };
    Ok(SubscriptionView { subscription, pending_payment })
}

/// Our row for a subscription not yet confirmed by Stripe.
fn pending_subscription(id: String, customer_id: &str, price_id: String, quantity: u32) -> Subscription {
    Subscription {
        id,
        customer_id: customer_id.to_string(),
        stripe_subscription_id: None,
        price_id,
        quantity,
        status: SubscriptionStatus::Pending,
        current_period_end: None,
        cancel_at_period_end: false,
        stripe_created: None,
        last_event_at: 0,
    }
}

/// A new row mirroring a subscription found at Stripe (adopted by `subscribe`, or brought in by a
/// webhook), not yet stored.
pub(super) fn mirror_subscription(
    store: &dyn Store,
    customer_id: &str,
    remote: &super::StripeSubscription,
) -> Result<Subscription, Error> {
    // A subscription without a price (not one of ours) is still mirrored, under "unknown".
    let price_id = remote.price_id.clone().unwrap_or_else(|| "unknown".into());
    let mut sub = pending_subscription(adoptable_local_id(store, remote)?, customer_id, price_id, remote.quantity.unwrap_or(1));
    sub.apply(remote);
    Ok(sub)
}

/// A subscription that reached the mirror from Stripe in its trial (a Checkout page's, the
/// dashboard's) uses up the user's trial as one made here does, so leaving billing and coming
/// back gives no second one. Its length is read from its first period.
fn record_trial_of(store: &dyn Store, customer_id: &str, remote: &super::StripeSubscription, now: i64) -> Result<(), Error> {
    if remote.status != SubscriptionStatus::Trialing || store.trial_granted(customer_id)? {
        return Ok(());
    }
    let seconds = remote.current_period_end.unwrap_or(remote.created).saturating_sub(remote.created).clamp(0, i64::MAX - 86_400);
    let days = u32::try_from((seconds + 86_399) / 86_400).unwrap_or(u32::MAX);
    Ok(store.record_trial(customer_id, now, days)?)
}

/// Our id for a subscription found at Stripe: the one in its metadata when it is a free UUID.
fn adoptable_local_id(store: &dyn Store, remote: &super::StripeSubscription) -> Result<String, Error> {
    if let Some(candidate) = &remote.local_id
        && uuid::Uuid::parse_str(candidate).is_ok() && store.subscription_by_id(candidate)?.is_none() {
            return Ok(candidate.clone());
        }
    Ok(new_local_id())
}

/// The caller's subscription `id` and its Stripe id: 404 when the caller has none by that id,
/// 409 `subscription_pending` while Stripe has not answered its creation yet.
fn subscription_at_stripe(store: &dyn Store, user: &UserId, id: &str) -> Result<(Subscription, String), Error> {
    let sub = store.subscription(user.as_str(), id)?.ok_or_else(|| Error::not_found("No such subscription."))?;
    match sub.stripe_subscription_id.clone() {
        Some(stripe_id) => Ok((sub, stripe_id)),
        None => Err(Error::Busy {
            code: "subscription_pending",
            detail: "The subscription is still being created; retry shortly.".into(),
        }),
    }
}

/// As [`subscription_at_stripe`], for a change only a live subscription takes: an ended one
/// (`canceled`, `incomplete_expired`) is 409 `subscription_ended`.
fn live_subscription(store: &dyn Store, user: &UserId, id: &str) -> Result<(Subscription, String), Error> {
    let (sub, stripe_id) = subscription_at_stripe(store, user, id)?;
    ensure_live(&sub)?;
    Ok((sub, stripe_id))
}

/// `sub` as Stripe has it now, for a change that the mirror says is made already, before it is
/// answered as a no-op: the mirror lags a change made in Stripe's dashboard or customer portal
/// until its webhook comes (or for as long as webhooks fail), and a change answered from a stale
/// copy would change nothing while saying it had (seats left at the portal's number, a
/// cancellation left in place). The mirror catches up; only would-be no-ops pay this read. Stripe
/// unreachable: the mirror's answer, as before this read (a no-op needs no Stripe), logged.
fn caught_up(ctx: &Ctx<'_>, sub: Subscription, stripe_id: &str) -> Result<Subscription, Error> {
    let remote = match ctx.stripe.subscription(stripe_id) {
        Ok(Some(remote)) => remote,
        Ok(None) => return Ok(sub),
        Err(err) => {
            telemetry::warn("a no-op change answered from the mirror: Stripe could not confirm it", &[("cause", err.to_string().into())]);
            return Ok(sub);
        }
    };
    let mut fresh = sub.clone();
    fresh.apply(&remote);
    if fresh != sub {
        ctx.store.update_subscription(&fresh)?;
    }
    Ok(fresh)
}

fn ensure_live(sub: &Subscription) -> Result<(), Error> {
    if !sub.status.is_live() {
        return Err(Error::Conflict {
            code: "subscription_ended",
            detail: "This subscription has ended and cannot be changed; subscribe again.".into(),
        });
    }
    Ok(())
}

/// Stores what Stripe answered to a change of `sub` (inside the caller's locked transaction)
/// and audits it as `action`, with `detail` after the ids.
fn record_change(ctx: &Ctx<'_>, user: &UserId, mut sub: Subscription, remote: &super::StripeSubscription, action: &str, detail: &str) -> Result<Subscription, Error> {
    sub.apply(remote);
    ctx.store.update_subscription(&sub)?;
    ctx.store.audit(
        ctx.now,
        user.as_str(),
        action,
        Some(user.as_str()),
        &format!("subscription={} stripe_subscription={}{detail}", sub.id, remote.id),
    )?;
    Ok(sub)
}

/// `DELETE /customers/me/subscriptions/{id}`: an ended subscription is answered as it is.
pub fn cancel_subscription(ctx: &Ctx<'_>, user: &UserId, id: &str, at_period_end: bool) -> Result<Subscription, Error> {
    end_subscription(ctx, user, id, at_period_end, false)
}

/// `PATCH /customers/me/subscriptions/{id}` with `cancel_at_period_end: true`: as `DELETE`
/// schedules it, but an ended subscription is 409 `subscription_ended`, as for every change by
/// PATCH.
pub fn schedule_end(ctx: &Ctx<'_>, user: &UserId, id: &str) -> Result<Subscription, Error> {
    end_subscription(ctx, user, id, true, true)
}

/// `refuse_ended`: an ended subscription is 409 `subscription_ended` rather than answered as it is.
fn end_subscription(ctx: &Ctx<'_>, user: &UserId, id: &str, at_period_end: bool, refuse_ended: bool) -> Result<Subscription, Error> {
    let store = ctx.store;
    with_customer_locked(store, user, || {
        let (mut sub, stripe_id) = if refuse_ended { live_subscription(store, user, id)? } else { subscription_at_stripe(store, user, id)? };
        if !sub.status.is_live() {
            return Ok(sub);
        }
        if at_period_end && sub.cancel_at_period_end {
            sub = caught_up(ctx, sub, &stripe_id)?;
            if refuse_ended {
                ensure_live(&sub)?;
            }
            if !sub.status.is_live() || sub.cancel_at_period_end {
                return Ok(sub);
            }
        }
        let remote = if at_period_end {
            ctx.stripe.set_cancel_at_period_end(&stripe_id, true, &subscription_change_key(&sub.id, "cancel"))?
        } else {
            ctx.stripe.cancel_now(&stripe_id)?
        };
        let action = if at_period_end { "subscription.cancel_at_period_end" } else { "subscription.canceled" };
        record_change(ctx, user, sub, &remote, action, "")
    })
}

/// `PATCH /customers/me/subscriptions/{id}` with `cancel_at_period_end: false`: withdraws a
/// cancellation scheduled for the end of the period, so the subscription renews (Cashier's
/// `resume`). Nothing to withdraw (at Stripe too, [`caught_up`]) → the subscription as it is; an
/// ended subscription cannot come back (409 `subscription_ended`: subscribe again).
pub fn resume_subscription(ctx: &Ctx<'_>, user: &UserId, id: &str) -> Result<Subscription, Error> {
    let store = ctx.store;
    with_customer_locked(store, user, || {
        let (mut sub, stripe_id) = live_subscription(store, user, id)?;
        if !sub.cancel_at_period_end {
            sub = caught_up(ctx, sub, &stripe_id)?;
            ensure_live(&sub)?;
            if !sub.cancel_at_period_end {
                return Ok(sub);
            }
        }
        let remote = ctx.stripe.set_cancel_at_period_end(&stripe_id, false, &subscription_change_key(&sub.id, "resume"))?;
        record_change(ctx, user, sub, &remote, "subscription.resumed", "")
    })
}

/// `PATCH /customers/me/subscriptions/{id}` with `price_id`, `quantity` or both: moves a live
/// subscription to another price (Cashier's `swap`) and/or sets how many units it bills
/// (Cashier's `updateQuantity`); Stripe prorates the rest of the period on the next invoice.
/// What the subscription already has is a no-op; a price another live subscription of the
/// customer already has is 409 `already_subscribed`, as when subscribing.
pub fn change_item(ctx: &Ctx<'_>, user: &UserId, id: &str, price: Option<&PriceId>, quantity: Option<Quantity>) -> Result<Subscription, Error> {
    let store = ctx.store;
    with_customer_locked(store, user, || {
        let (mut sub, stripe_id) = live_subscription(store, user, id)?;
        if ItemTarget::of(&sub, price, quantity).is_none() {
            sub = caught_up(ctx, sub, &stripe_id)?;
            ensure_live(&sub)?;
        }
        let Some(target) = ItemTarget::of(&sub, price, quantity) else {
            return Ok(sub);
        };
        target.ensure_price_free(store, user, &sub)?;
        let item = stripe_item(ctx, &stripe_id)?;
        let change = target.change(&item);
        let remote = ctx.stripe.change_item(&stripe_id, change, &subscription_change_key(&sub.id, "item"))?;
        let (action, detail) = match target.price {
            Some(price) => ("subscription.price_changed", format!(" from={} to={} quantity={}", sub.price_id, price.as_str(), change.quantity)),
            None => ("subscription.quantity_changed", format!(" from={} to={}", sub.quantity, change.quantity)),
        };
        record_change(ctx, user, sub, &remote, action, &detail)
    })
}

/// What a change asks of a subscription's item, when it asks anything new of it.
struct ItemTarget<'a> {
    /// None: the price Stripe has now.
    price: Option<&'a PriceId>,
    /// None: the quantity Stripe has now.
    quantity: Option<Quantity>,
}

impl<'a> ItemTarget<'a> {
    /// The price and quantity `sub`'s item is to have, or None when they are what it has.
    fn of(sub: &Subscription, price: Option<&'a PriceId>, quantity: Option<Quantity>) -> Option<Self> {
        let price = price.filter(|p| p.as_str() != sub.price_id);
        let quantity = quantity.filter(|q| q.get() != sub.quantity);
        if price.is_none() && quantity.is_none() {
            return None;
        }
        Some(Self { price, quantity })
    }

    /// 409 `already_subscribed` when another live subscription of the user has the new price:
    /// moving `sub` to it would make two.
    fn ensure_price_free(&self, store: &dyn Store, user: &UserId, sub: &Subscription) -> Result<(), Error> {
        let Some(price) = self.price else { return Ok(()) };
        let taken = store
            .subscriptions(user.as_str())?
            .into_iter()
            .any(|other| other.id != sub.id && other.status.is_live() && other.price_id == price.as_str());
        if taken {
            return Err(crate::error::conflict_for_constraint("uq_subscriptions_live_price"));
        }
        Ok(())
    }

    fn change(&self, item: &'a StripeItem) -> ItemChange<'a> {
        ItemChange { item_id: &item.id, price: self.price.unwrap_or(&item.price), quantity: self.quantity.map_or(item.quantity, Quantity::get) }
    }
}

/// The Stripe subscription's item as Stripe has it now: what a change names (our mirror does not
/// keep the item's id), and the price and quantity a change keeps when it names only the other
/// (Stripe's, not our mirror's, which a webhook may not have brought up to date yet).
struct StripeItem {
    id: String,
    price: PriceId,
    quantity: u32,
}

fn stripe_item(ctx: &Ctx<'_>, stripe_id: &str) -> Result<StripeItem, Error> {
    let remote = ctx.stripe.subscription(stripe_id)?;
    remote
        .and_then(|remote| Some(StripeItem { id: remote.item_id?, price: PriceId::parse(remote.price_id.as_deref()?).ok()?, quantity: remote.quantity.unwrap_or(1) }))
        .ok_or_else(|| Error::internal(format!("stripe subscription {stripe_id} has no readable item")))
}

/// `GET /customers/me/subscriptions/{id}/upcoming-invoice[?price_id=][&quantity=]`: the invoice
/// Stripe will make next for a subscription (Cashier's `upcomingInvoice`) or, with a price or a
/// quantity, the one it would make after that change now, its prorations included (Cashier's
/// `previewInvoice`). Nothing is created or changed. A subscription that ends before it would
/// invoice again (ended, or set to end at its period's end) is 404 `no_upcoming_invoice`; a
/// change the PATCH would refuse is refused as the PATCH refuses it.
pub fn upcoming_invoice(ctx: &Ctx<'_>, user: &UserId, id: &str, price: Option<&PriceId>, quantity: Option<Quantity>) -> Result<InvoicePreview, Error> {
    let none = || Error::NotFound {
        code: "no_upcoming_invoice",
        detail: "This subscription ends before it would be invoiced again.".into(),
    };
    let store = ctx.store;
    let (sub, stripe_id) = subscription_at_stripe(store, user, id)?;
    // What the subscription already has previews the renewal, as changing to it changes nothing.
    let item = match ItemTarget::of(&sub, price, quantity) {
        Some(target) => {
            ensure_live(&sub)?;
            target.ensure_price_free(store, user, &sub)?;
            Some((target, stripe_item(ctx, &stripe_id)?))
        }
        None if !sub.status.is_live() || sub.cancel_at_period_end => return Err(none()),
        None => None,
    };
    let stripe_customer = stripe_customer_of(store, user)?;
    let change = item.as_ref().map(|(target, item)| (target.change(item), ctx.now));
    // A preview changes nothing at Stripe; the key only makes our client's retries one request.
    let key = format!("invoice-preview:{}:{}", sub.id, new_local_id());
    ctx.stripe.preview_invoice(&stripe_customer, &stripe_id, change, &key)?.ok_or_else(none)
}

/// Counts a request of `user` that may call Stripe against the user's budget for this minute:
/// over `per_minute`, 429 with the seconds left in the minute. Stripe limits the whole account's
/// request rate, so without it one account's script could spend that limit for every customer.
pub fn spend_stripe_budget(store: &dyn Store, user: &UserId, now: i64, per_minute: u64) -> Result<(), Error> {
    let window_start = now - now.rem_euclid(60);
    let calls = store.count_user_call(user.as_str(), window_start)?;
    if calls > per_minute {
        let retry_after = u32::try_from(window_start + 60 - now).unwrap_or(60).max(1);
        return Err(Error::RateLimited { retry_after });
    }
    Ok(())
}

/// `POST /customers/me/setup-intents`: a SetupIntent for the caller's Stripe customer, whose
/// `client_secret` lets the browser collect a card with Stripe.js (`confirmCardSetup`), as
/// Cashier's `createSetupIntent()`. Card details never pass through us.
pub fn create_setup_intent(ctx: &Ctx<'_>, user: &UserId) -> Result<SetupIntent, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let key = format!("setup-intent:{}:{}", key_part(user.as_str()), new_local_id());
    Ok(ctx.stripe.create_setup_intent(&stripe_customer, user.as_str(), &key)?)
}

/// `PUT /customers/me/payment-method`: makes a payment method the one Stripe charges for the
/// caller's invoices and renewals (Cashier's `updateDefaultPaymentMethod`). It is attached to
/// the caller's Stripe customer first when it is not yet (a SetupIntent confirmed for that
/// customer has attached it already). One attached to another customer is answered exactly as
/// one that does not exist, so an id seen elsewhere tells nothing and moves no one's card.
pub fn set_default_payment_method(ctx: &Ctx<'_>, user: &UserId, id: &PaymentMethodId) -> Result<PaymentMethodSummary, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let unknown = || Error::field("payment_method_id", "not_found", "No such payment method.");
    let method = ctx.stripe.payment_method(id.as_str())?.ok_or_else(unknown)?;
    let method = match method.customer.as_deref() {
        Some(owner) if owner == stripe_customer => method,
        Some(_) => return Err(unknown()),
        None => {
            let key = format!("payment-method-attach:{}:{}", key_part(user.as_str()), new_local_id());
            ctx.stripe.attach_payment_method(id.as_str(), &stripe_customer, &key)?
        }
    };
    let key = format!("payment-method-default:{}:{}", key_part(user.as_str()), new_local_id());
    ctx.stripe.set_default_payment_method(&stripe_customer, id.as_str(), &key)?;
    ctx.store.audit(
        ctx.now,
        user.as_str(),
        "customer.payment_method_set",
        Some(user.as_str()),
        &format!("stripe_customer={stripe_customer} payment_method={}", id.as_str()),
    )?;
    Ok(method.summary)
}

/// `GET /customers/me/payment-method`: the payment method Stripe charges, if any.
pub fn default_payment_method(ctx: &Ctx<'_>, user: &UserId) -> Result<Option<PaymentMethodSummary>, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let Some(id) = ctx.stripe.default_payment_method(&stripe_customer)? else {
        return Ok(None);
    };
    Ok(ctx.stripe.payment_method(&id)?.map(|method| method.summary))
}

/// `DELETE /customers/me/payment-method`: the card Stripe charges is detached from the caller's
/// Stripe customer (Stripe can never charge it again) and no longer the default. Refused with 409
/// while a subscription at Stripe would still renew: its next invoice would fail and dun the user.
/// The caller cancels at the period's end first, or puts another card. Stripe's own list is read
/// rather than our mirror, which may not yet know a subscription made in Stripe's dashboard.
///
/// A default that is not the customer's card any more is only cleared.
pub fn remove_default_payment_method(ctx: &Ctx<'_>, user: &UserId) -> Result<(), Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let none = || Error::NotFound { code: "no_payment_method", detail: "There is no default payment method to remove.".into() };
    let id = ctx.stripe.default_payment_method(&stripe_customer)?.ok_or_else(none)?;
    if let Some(renewing) = ctx
        .stripe
        .subscriptions_of(&stripe_customer)?
        .into_iter()
        .find(|s| s.status.is_live() && !s.cancel_at_period_end)
    {
        return Err(Error::Conflict {
            code: "payment_method_in_use",
            detail: format!(
                "Subscription {} renews with this payment method: put another one, or cancel the subscription at its period's end first.",
                renewing.local_id.as_deref().unwrap_or(&renewing.id)
            ),
        });
    }
    if ctx.stripe.payment_method(&id)?.is_some_and(|m| m.customer.as_deref() == Some(stripe_customer.as_str())) {
        // Stripe clears the customer's default along with the card it detaches.
        let key = format!("payment-method-detach:{}:{}", key_part(user.as_str()), new_local_id());
        ctx.stripe.detach_payment_method(&id, &key)?;
    } else {
        // A default that is no longer the customer's card (gone, or moved elsewhere): only
        // the default is left to clear.
        let key = format!("payment-method-clear:{}:{}", key_part(user.as_str()), new_local_id());
        ctx.stripe.clear_default_payment_method(&stripe_customer, &key)?;
    }
    ctx.store.audit(
        ctx.now,
        user.as_str(),
        "customer.payment_method_removed",
        Some(user.as_str()),
        &format!("stripe_customer={stripe_customer} payment_method={id}"),
    )?;
    Ok(())
}

/// `POST /customers/me/portal-sessions`: the URL of Stripe's customer portal for the caller
/// (Cashier's `billingPortalUrl`), where the user manages cards, subscriptions and invoices on
/// Stripe's own pages, then comes back to `return_url` (the operator's
/// `billing_portal_return_url`; never the client's, which would make us an open redirect).
/// What the user changes there comes back by webhook, as any change made at Stripe.
pub fn create_portal_session(ctx: &Ctx<'_>, user: &UserId, return_url: Option<&str>) -> Result<String, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let key = format!("portal-session:{}:{}", key_part(user.as_str()), new_local_id());
    let url = ctx.stripe.create_portal_session(&stripe_customer, return_url, &key)?;
    ctx.store.audit(ctx.now, user.as_str(), "customer.portal_session", Some(user.as_str()), &format!("stripe_customer={stripe_customer}"))?;
    Ok(url)
}

/// `GET /customers/me/billing-address`: 404 `no_billing_address` when Stripe holds none.
pub fn billing_address(ctx: &Ctx<'_>, user: &UserId) -> Result<BillingAddress, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    ctx.stripe.billing_address(&stripe_customer)?.ok_or_else(|| Error::NotFound {
        code: "no_billing_address",
        detail: "No billing address; set one with PUT.".into(),
    })
}

/// `PUT /customers/me/billing-address`: the address Stripe prints on the caller's invoices
/// (Cashier's `updateStripeCustomer` with an address), replaced whole. Audited without its
/// content.
pub fn set_billing_address(ctx: &Ctx<'_>, user: &UserId, address: &BillingAddress) -> Result<BillingAddress, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let key = format!("billing-address:{}:{}", key_part(user.as_str()), new_local_id());
    ctx.stripe.set_billing_address(&stripe_customer, address, &key)?;
    let detail = format!("stripe_customer={stripe_customer} country={}", address.country);
    ctx.store.audit(ctx.now, user.as_str(), "customer.billing_address_set", Some(user.as_str()), &detail)?;
    Ok(address.clone())
}

/// `GET /customers/me/tax-ids`: the tax ids Stripe prints on the caller's invoices.
pub fn tax_ids(ctx: &Ctx<'_>, user: &UserId) -> Result<Vec<TaxId>, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    Ok(ctx.stripe.tax_ids(&stripe_customer)?)
}

/// `POST /customers/me/tax-ids`: a tax id (a VAT number, say) for the caller's invoices
/// (Cashier's `createTaxId`); Stripe checks the value against its type, and verifies some types
/// (EU VAT with VIES) afterwards. Audited with its id and type (not its value).
pub fn add_tax_id(ctx: &Ctx<'_>, user: &UserId, tax_id: &NewTaxId) -> Result<TaxId, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let key = format!("tax-id:{}:{}", key_part(user.as_str()), new_local_id());
    let added = ctx.stripe.add_tax_id(&stripe_customer, tax_id, &key)?;
    let detail = format!("stripe_customer={stripe_customer} tax_id={} type={}", added.id, added.kind);
    ctx.store.audit(ctx.now, user.as_str(), "customer.tax_id_added", Some(user.as_str()), &detail)?;
    Ok(added)
}

/// `DELETE /customers/me/tax-ids/{id}`: 404 when the caller's Stripe customer has no such tax id
/// (another customer's id included: Stripe looks it up under the caller's customer only).
pub fn delete_tax_id(ctx: &Ctx<'_>, user: &UserId, id: &str) -> Result<(), Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    if !ctx.stripe.delete_tax_id(&stripe_customer, id)? {
        return Err(Error::not_found("No such tax id."));
    }
    let detail = format!("stripe_customer={stripe_customer} tax_id={id}");
    ctx.store.audit(ctx.now, user.as_str(), "customer.tax_id_deleted", Some(user.as_str()), &detail)?;
    Ok(())
}

/// `POST /customers/me/invoices/{id}/pay`: charges one of the caller's open invoices now with the
/// default payment method, as a user does after putting a new card in place of one that was
/// declined, rather than waiting days for Stripe's next retry. An invoice of another customer is
/// 404, as one Stripe does not know; a paid one 409 `invoice_paid`, a draft, void or
/// uncollectible one 409 `invoice_not_payable`; a declined card 402. When the bank asks for 3-D
/// Secure the invoice stays open and `pending_payment` carries the PaymentIntent's
/// `client_secret` for Stripe.js. A paid invoice's subscription is read from Stripe into the
/// mirror at once (the webhook would bring the same state a moment later).
pub fn pay_invoice(ctx: &Ctx<'_>, user: &UserId, id: &str) -> Result<StripeInvoice, Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let found = ctx
        .stripe
        .invoice(id)?
        .filter(|found| found.customer.as_deref() == Some(stripe_customer.as_str()))
        .ok_or_else(|| Error::not_found("No such invoice."))?;
    match found.invoice.status.as_deref() {
        Some("open") => {}
        Some("paid") => return Err(Error::Conflict { code: "invoice_paid", detail: "This invoice is already paid.".into() }),
        other => {
            let detail = format!("Only an open invoice can be paid; this one is {}.", other.unwrap_or("of unknown status"));
            return Err(Error::Conflict { code: "invoice_not_payable", detail });
        }
    }
    let key = format!("invoice-pay:{id}:{}", new_local_id());
    let paid = match ctx.stripe.pay_invoice(id, &key) {
        Ok(paid) => paid,
        // Stripe's answer when the bank wants 3-D Secure: the PaymentIntent waits for the user.
        Err(StripeError::Card { code: Some(code), .. }) if code == "invoice_payment_intent_requires_action" => {
            ctx.stripe.invoice(id)?.ok_or_else(|| Error::internal(format!("invoice {id} vanished while being paid")))?
        }
        Err(err) => {
            ctx.store.audit(ctx.now, user.as_str(), "invoice.payment_failed", Some(user.as_str()), &format!("invoice={id}"))?;
            return Err(err.into());
        }
    };
    let status = paid.invoice.status.as_deref().unwrap_or("unknown");
    ctx.store.audit(ctx.now, user.as_str(), "invoice.paid_by_user", Some(user.as_str()), &format!("invoice={id} status={status}"))?;
    if status == "paid"
        && let Some(sub_id) = &paid.subscription
        && let Err(err) = refresh_subscription(ctx, user, sub_id)
    {
        // The payment is made; the webhook brings the subscription's new state anyway.
        telemetry::warn("subscription not refreshed after an invoice was paid", &[("cause", err.to_string().into())]);
    }
    Ok(paid)
}

/// Stores Stripe's current state of the caller's subscription `stripe_id` in the mirror.
fn refresh_subscription(ctx: &Ctx<'_>, user: &UserId, stripe_id: &str) -> Result<(), Error> {
    let store = ctx.store;
    with_customer_locked(store, user, || {
        let Some(mut sub) = store.subscription_by_stripe_id(stripe_id)?.filter(|sub| sub.customer_id == user.as_str()) else {
            return Ok(());
        };
        if let Some(remote) = ctx.stripe.subscription(stripe_id)? {
            sub.apply(&remote);
            store.update_subscription(&sub)?;
        }
        Ok(())
    })
}

/// `GET /customers/me/invoices`: bill_to from auth, invoices from Stripe.
pub fn invoices(
    ctx: &Ctx<'_>,
    user: &UserId,
    limit: u32,
    starting_after: Option<&str>,
) -> Result<(ProfileLookup, InvoicePage), Error> {
    let stripe_customer = stripe_customer_of(ctx.store, user)?;
    let profile = ctx.profiles.profile(user.as_str())?;
    sync_stripe_profile_or_log(ctx, user, &stripe_customer, &profile);
    let page = ctx.stripe.invoices(&stripe_customer, limit, starting_after)?;
    Ok((profile, page))
}

/// What [`sync_stripe_profile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileSync {
    /// Stripe already had this name and email.
    Current,
    /// Stripe was sent them.
    Synced,
    /// Nothing was done: the profile is a stale copy served while auth is unavailable, and may be
    /// older than what Stripe holds.
    NotFresh,
}

/// Keeps Stripe's copy of a customer's name and email (printed on its invoices; receipts go to the
/// email) equal to auth's, which the user may change at any time: sends the profile to Stripe when
/// its digest differs from the last one sent, then records it. `actor` is who caused the read.
pub fn sync_stripe_profile(
    ctx: &Ctx<'_>,
    actor: &str,
    user: &UserId,
    stripe_customer: &str,
    lookup: &ProfileLookup,
) -> Result<ProfileSync, Error> {
    if matches!(lookup.source, ProfileSource::StaleCache { .. }) {
        return Ok(ProfileSync::NotFresh);
    }
    let digest = ctx.stripe.profile_digest(&lookup.profile);
    if ctx.store.stripe_profile(user.as_str())?.is_some_and(|sent| sent.digest == digest) {
        return Ok(ProfileSync::Current);
    }
    ctx.stripe.update_customer_profile(stripe_customer, &lookup.profile, &profile_update_key(user))?;
    ctx.store.set_stripe_profile_digest(user.as_str(), &digest, ctx.now)?;
    ctx.store.audit(ctx.now, actor, "customer.stripe_profile_synced", Some(user.as_str()), &format!("stripe_customer={stripe_customer}"))?;
    Ok(ProfileSync::Synced)
}

/// [`sync_stripe_profile`] on the way to something else: a failure is logged (its code only: a
/// Stripe message may quote the email) and left to the next read; the request goes on.
fn sync_stripe_profile_or_log(ctx: &Ctx<'_>, user: &UserId, stripe_customer: &str, lookup: &ProfileLookup) {
    if let Err(err) = sync_stripe_profile(ctx, user.as_str(), user, stripe_customer, lookup) {
        telemetry::warn(
            "Stripe's copy of the name and email is not updated; the next read retries",
            &[("customer", user.as_str().into()), ("code", err.problem().code.into())],
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::fake::{FakeProfiles, FakeStripe, MemoryStore};
    use crate::domain::{Invoice, PromotionCode};

    /// The ports of a request, all fakes, auth up.
    pub(crate) struct Fakes {
        pub store: MemoryStore,
        pub stripe: FakeStripe,
        pub profiles: FakeProfiles,
    }

    impl Fakes {
        pub fn up() -> Self {
            Self { store: MemoryStore::default(), stripe: FakeStripe::default(), profiles: FakeProfiles::up() }
        }

        pub fn ctx(&self, now: i64) -> Ctx<'_> {
            Ctx { store: &self.store, stripe: &self.stripe, profiles: &self.profiles, now }
        }
    }

    /// One unit of `price`.
    pub(crate) fn one(price: &PriceId) -> SubscriptionOrder {
        SubscriptionOrder { price: price.clone(), quantity: Quantity::ONE, promotion_code: None }
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn keys_are_derived_from_our_ids_and_bounded() {
        assert_eq!(customer_create_key(&user("u-1"), 1000, 2), "customer-create:u-1:1000:2");
        let long = "x".repeat(255);
        // Stripe takes keys up to 255 characters; ids over 128 are hashed.
        let key = customer_create_key(&user(&long), i64::MIN, u32::MAX);
        assert!(key.len() < 120, "{key}");
        let key = customer_create_key(&user(&"y".repeat(128)), i64::MIN, u32::MAX);
        assert!(key.len() <= 255, "{key}");
        assert_eq!(subscription_create_key("abc"), "subscription-create:abc");
    }

    /// An erasure that deletes the account at auth while its customer is being made (after the
    /// first profile lookup, before COMMIT) leaves nothing behind: no row, no Stripe customer.
    #[test]
    fn a_customer_whose_account_is_erased_during_its_creation_is_not_kept() {
        let fakes = Fakes::up();
        fakes.profiles.lookups_before_gone.set(Some(1));
        let ctx = fakes.ctx(1000);
        let err = create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap_err();
        assert!(matches!(err, Error::NotFound { code: "profile_not_found", .. }), "{err:?}");
        assert!(fakes.store.customer("u1").unwrap().is_none(), "the row was rolled back");
        assert!(fakes.stripe.customers.borrow().is_empty(), "the Stripe customer made for it was deleted");
        assert!(!fakes.store.audit_events().contains(&"customer.created".to_string()));
        // Nothing is left claimed: were the account back, creating it would start afresh.
        fakes.profiles.lookups_before_gone.set(None);
        assert!(create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).is_ok());
    }

    /// Only auth itself can say an account exists now: with auth unavailable and only a stale
    /// copy of the profile, no customer is made and Stripe is not called.
    #[test]
    fn a_customer_is_made_only_for_an_account_auth_confirms() {
        let fakes = Fakes::up();
        fakes.profiles.source.set(ProfileSource::StaleCache { age: 120 });
        let ctx = fakes.ctx(1000);
        let err = create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap_err();
        assert_eq!(err.status(), 503, "{err:?}");
        assert!(fakes.stripe.customers.borrow().is_empty());
        assert!(fakes.store.customer("u1").unwrap().is_none());
    }

    /// `require_verified_email`: a user whose email auth has not seen verified gets 403 and
    /// nothing is made; once verified, the same request makes the customer.
    #[test]
    fn the_policy_can_require_a_verified_email_before_billing() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let policy = CustomerPolicy { require_verified_email: true };
        let areas = AreaIds::parse(&[1]).unwrap();
        let err = create_customer_with(&ctx, &user("u1"), &areas, policy).unwrap_err();
        assert_eq!(err, Error::EmailNotVerified);
        assert_eq!((err.status(), err.problem().code), (403, "email_not_verified"));
        assert!(fakes.stripe.customers.borrow().is_empty(), "nothing reached Stripe");
        fakes.profiles.email_verified.set(true);
        assert!(create_customer_with(&ctx, &user("u1"), &areas, policy).is_ok(), "no lease was left behind");
        // Off (the default), an unverified user becomes a customer.
        fakes.profiles.email_verified.set(false);
        assert!(create_customer(&ctx, &user("u2"), &areas).is_ok());
    }

    #[test]
    fn create_then_conflict() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let areas = AreaIds::parse(&[2, 1]).unwrap();
        let customer = create_customer(&ctx, &user("u1"), &areas).unwrap();
        assert_eq!(customer.area_ids.as_slice(), &[1, 2]);
        assert_eq!(fakes.stripe.customers.borrow().len(), 1);
        let err = create_customer(&ctx, &user("u1"), &areas).unwrap_err();
        assert_eq!(err.status(), 409);
        assert_eq!(fakes.stripe.customers.borrow().len(), 1);
    }

    /// A database lost right after COMMIT must not turn a stored change into a 503: the answer
    /// is read inside the transaction (found by tests/faults_db.rs in CI).
    #[test]
    fn committed_writes_are_answered_even_when_the_database_is_lost_right_after() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        fakes.store.lost_after_commit.set(true);
        let created = create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).expect("a committed creation is a success");
        assert_eq!(created.area_ids.as_slice(), &[1]);
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        fakes.store.lost_after_commit.set(true);
        let updated = update_areas(&fakes.store, &user("u1"), &AreaIds::parse(&[7]).unwrap(), 1001).expect("a committed update is a success");
        assert_eq!(updated.area_ids.as_slice(), &[7]);
    }

    /// Found by schemathesis: leaving billing and coming back reused the first Stripe key, so
    /// Stripe replayed the deleted customer.
    #[test]
    fn a_user_who_left_gets_a_new_stripe_customer_when_coming_back() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let areas = AreaIds::parse(&[1]).unwrap();
        let first = create_customer(&ctx, &user("u1"), &areas).unwrap();
        delete_customer(&ctx, &user("u1")).unwrap();
        let again = create_customer(&ctx, &user("u1"), &areas).unwrap();
        assert_ne!(again.stripe_customer_id, first.stripe_customer_id);
        assert!(fakes.stripe.customers.borrow().iter().any(|c| Some(&c.id) == again.stripe_customer_id.as_ref()));
    }

    #[test]
    fn an_ambiguous_stripe_failure_then_a_retry_makes_one_customer() {
        let fakes = Fakes::up();
        // Stripe creates the customer but the answer is lost.
        fakes.stripe.fail_after_create.set(1);
        let ctx = fakes.ctx(1000);
        let areas = AreaIds::parse(&[1]).unwrap();
        assert_eq!(create_customer(&ctx, &user("u1"), &areas).unwrap_err().status(), 503);
        let customer = create_customer(&ctx, &user("u1"), &areas).unwrap();
        assert_eq!(fakes.stripe.customers.borrow().len(), 1);
        assert_eq!(customer.stripe_customer_id.as_deref(), Some(fakes.stripe.customers.borrow()[0].id.as_str()));
    }

    #[test]
    fn a_crash_between_stripe_and_the_row_is_resumed_with_the_same_key() {
        let fakes = Fakes::up();
        // First attempt: claimed and Stripe called, then "crash" (no row, lease left behind).
        let Claim::Claimed { started, .. } = fakes.store.claim_provisioning("u1", 1000, PROVISIONING_LEASE_SECS).unwrap() else { panic!("claimed") };
        let first = fakes
            .stripe
            .create_customer(&NewStripeCustomer { user_id: "u1", name: "A", email: "a@example.org" }, &customer_create_key(&user("u1"), started, 1))
            .unwrap();
        // While the lease runs, others are told to wait.
        let ctx = fakes.ctx(1010);
        assert_eq!(create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap_err().status(), 409);
        // After the lease: resumed, adopts the same Stripe customer.
        let ctx = fakes.ctx(1000 + PROVISIONING_LEASE_SECS + 1);
        let customer = create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        assert_eq!(customer.stripe_customer_id.as_deref(), Some(first.id.as_str()));
        assert_eq!(fakes.stripe.customers.borrow().len(), 1);
    }

    #[test]
    fn auth_down_gives_503_and_releases_the_lease() {
        let fakes = Fakes { profiles: FakeProfiles::down(), ..Fakes::up() };
        let ctx = fakes.ctx(1000);
        let err = create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap_err();
        assert_eq!(err.status(), 503);
        assert!(fakes.stripe.customers.borrow().is_empty());
        let profiles = FakeProfiles::up();
        let ctx = Ctx { profiles: &profiles, ..ctx };
        assert!(create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).is_ok());
    }

    #[test]
    fn subscribe_twice_to_one_price_is_a_conflict() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let price = PriceId::parse("price_basic").unwrap();
        let sub = subscribe(&ctx, &user("u1"), &one(&price), 0).unwrap().subscription;
        assert_eq!(sub.status, SubscriptionStatus::Active);
        assert_eq!(subscribe(&ctx, &user("u1"), &one(&price), 0).unwrap_err().status(), 409);
        assert_eq!(fakes.stripe.subscriptions.borrow().len(), 1);
        let canceled = cancel_subscription(&ctx, &user("u1"), &sub.id, true).unwrap();
        assert!(canceled.cancel_at_period_end);
        let canceled = cancel_subscription(&ctx, &user("u1"), &sub.id, false).unwrap();
        assert_eq!(canceled.status, SubscriptionStatus::Canceled);
        // Ended: a new one may start.
        assert!(subscribe(&ctx, &user("u1"), &one(&price), 0).is_ok());
    }

    #[test]
    fn only_a_customers_first_subscription_gets_the_trial() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let basic = PriceId::parse("price_basic").unwrap();
        let first = subscribe(&ctx, &user("u1"), &one(&basic), 14).unwrap();
        assert_eq!(first.subscription.status, SubscriptionStatus::Trialing);
        assert_eq!(first.subscription.current_period_end, Some(1000 + 14 * 86_400), "the trial's end is the first period's");
        assert_eq!(first.pending_payment, None);
        // A second price, or the first again after cancelling: no new trial.
        let other = subscribe(&ctx, &user("u1"), &one(&PriceId::parse("price_pro").unwrap()), 14).unwrap();
        assert_eq!(other.subscription.status, SubscriptionStatus::Active);
        cancel_subscription(&ctx, &user("u1"), &first.subscription.id, false).unwrap();
        assert_eq!(subscribe(&ctx, &user("u1"), &one(&basic), 14).unwrap().subscription.status, SubscriptionStatus::Active);
        let events = fakes.store.audit_events();
        assert_eq!(events.iter().filter(|e| *e == "subscription.created").count(), 3, "{events:?}");

        // One that Stripe knows and we do not (made in the dashboard) counts as well.
        let customer = create_customer(&ctx, &user("u2"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        fakes
            .stripe
            .create_subscription(&NewSubscription { customer: customer.stripe_customer_id.as_deref().unwrap(), order: &one(&basic), promotion: None, trial_days: None, user_id: "u2", local_id: "dashboard" }, "k2")
            .unwrap();
        let pro = subscribe(&ctx, &user("u2"), &one(&PriceId::parse("price_pro").unwrap()), 14).unwrap();
        assert_eq!(pro.subscription.status, SubscriptionStatus::Active);
        // No trial configured: none given.
        create_customer(&ctx, &user("u3"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        assert_eq!(subscribe(&ctx, &user("u3"), &one(&basic), 0).unwrap().subscription.status, SubscriptionStatus::Active);
    }

    /// Leaving billing (every row and the Stripe customer deleted) and coming back as a new
    /// customer gives no second trial; only erasing the account forgets it.
    #[test]
    fn leaving_billing_and_coming_back_gives_no_second_trial() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let basic = PriceId::parse("price_basic").unwrap();
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        assert_eq!(subscribe(&ctx, &user("u1"), &one(&basic), 14).unwrap().subscription.status, SubscriptionStatus::Trialing);
        delete_customer(&ctx, &user("u1")).unwrap();
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        assert!(fakes.store.subscriptions("u1").unwrap().is_empty(), "a new customer, with nothing of the old");
        assert_eq!(subscribe(&ctx, &user("u1"), &one(&basic), 14).unwrap().subscription.status, SubscriptionStatus::Active);
        assert!(fakes.store.trial_granted("u1").unwrap());
        fakes.store.forget_trial("u1").unwrap();
        assert!(!fakes.store.trial_granted("u1").unwrap());
    }

    #[test]
    fn a_scheduled_cancellation_can_be_withdrawn_and_scheduled_again() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let sub = subscribe(&ctx, &user("u1"), &one(&PriceId::parse("price_basic").unwrap()), 0).unwrap().subscription;
        let stripe_id = sub.stripe_subscription_id.clone().unwrap();
        let at_stripe = || fakes.stripe.subscriptions.borrow().iter().find(|s| s.id == stripe_id).unwrap().cancel_at_period_end;

        // Nothing scheduled: nothing to withdraw, nothing sent.
        assert!(!resume_subscription(&ctx, &user("u1"), &sub.id).unwrap().cancel_at_period_end);
        assert!(cancel_subscription(&ctx, &user("u1"), &sub.id, true).unwrap().cancel_at_period_end);
        assert!(at_stripe());
        let resumed = resume_subscription(&ctx, &user("u1"), &sub.id).unwrap();
        assert!(!resumed.cancel_at_period_end);
        assert!(!at_stripe());
        // Each change has its own key: the second cancel is applied, not answered with the first's replay.
        assert!(cancel_subscription(&ctx, &user("u1"), &sub.id, true).unwrap().cancel_at_period_end);
        assert!(at_stripe(), "the second cancel reached Stripe");
        assert!(!resume_subscription(&ctx, &user("u1"), &sub.id).unwrap().cancel_at_period_end);
        assert!(!at_stripe(), "the second resume reached Stripe");
        // Scheduled in the customer portal, its webhook not come yet: the mirror says there is
        // nothing to withdraw, Stripe says otherwise, and the resume reaches it.
        fakes.stripe.subscriptions.borrow_mut().iter_mut().find(|s| s.id == stripe_id).unwrap().cancel_at_period_end = true;
        assert!(!resume_subscription(&ctx, &user("u1"), &sub.id).unwrap().cancel_at_period_end);
        assert!(!at_stripe(), "the portal's cancellation withdrawn");
        // And withdrawn in the portal: a DELETE at period end the mirror thinks made is made.
        assert!(cancel_subscription(&ctx, &user("u1"), &sub.id, true).unwrap().cancel_at_period_end);
        fakes.stripe.subscriptions.borrow_mut().iter_mut().find(|s| s.id == stripe_id).unwrap().cancel_at_period_end = false;
        assert!(cancel_subscription(&ctx, &user("u1"), &sub.id, true).unwrap().cancel_at_period_end);
        assert!(at_stripe(), "scheduled again at Stripe");
        let events: Vec<String> = fakes.store.audit_events().into_iter().filter(|e| e.starts_with("subscription.")).collect();
        assert_eq!(
            events[1..],
            ["subscription.cancel_at_period_end", "subscription.resumed", "subscription.cancel_at_period_end", "subscription.resumed",
             "subscription.resumed", "subscription.cancel_at_period_end", "subscription.cancel_at_period_end"]
        );

        // Someone else's, unknown, ended.
        assert_eq!(resume_subscription(&ctx, &user("u2"), &sub.id).unwrap_err().status(), 404);
        assert_eq!(resume_subscription(&ctx, &user("u1"), &new_local_id()).unwrap_err().status(), 404);
        cancel_subscription(&ctx, &user("u1"), &sub.id, false).unwrap();
        let err = resume_subscription(&ctx, &user("u1"), &sub.id).unwrap_err();
        assert!(matches!(err, Error::Conflict { code: "subscription_ended", .. }), "{err:?}");
        // Scheduling its end by PATCH is a change too; DELETE answers it as it is.
        let err = schedule_end(&ctx, &user("u1"), &sub.id).unwrap_err();
        assert!(matches!(err, Error::Conflict { code: "subscription_ended", .. }), "{err:?}");
        assert!(!cancel_subscription(&ctx, &user("u1"), &sub.id, true).unwrap().status.is_live());
    }

    #[test]
    fn a_first_payment_waiting_for_3ds_is_handed_to_the_client_and_can_be_read_again() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let plain = subscribe(&ctx, &user("u1"), &one(&PriceId::parse("price_plain").unwrap()), 0).unwrap();
        assert_eq!(plain.pending_payment, None);
        assert_eq!(subscription_view(&ctx, &user("u1"), &plain.subscription.id).unwrap().pending_payment, None);

        fakes.stripe.card_needs_3ds.set(true);
        let view = subscribe(&ctx, &user("u1"), &one(&PriceId::parse("price_3ds").unwrap()), 0).unwrap();
        assert_eq!(view.subscription.status, SubscriptionStatus::Incomplete);
        let pending = view.pending_payment.clone().expect("the payment waits for the user");
        assert_eq!(pending.status, "requires_action");
        // Read again later (the page was closed before 3-D Secure): the same payment, from Stripe.
        let again = subscription_view(&ctx, &user("u1"), &view.subscription.id).unwrap();
        assert_eq!(again, view);
        // Stripe down: 503, not a view saying nothing waits.
        fakes.stripe.down.set(true);
        assert_eq!(subscription_view(&ctx, &user("u1"), &view.subscription.id).unwrap_err().status(), 503);
        assert_eq!(subscription_view(&ctx, &user("u1"), &plain.subscription.id).unwrap().pending_payment, None, "no call for an active one");
        fakes.stripe.down.set(false);
        assert_eq!(subscription_view(&ctx, &user("u2"), &view.subscription.id).unwrap_err().status(), 404);
    }

    /// u1 made a customer, subscribed to `price_basic` and to `price_other`.
    fn subscribed_to_basic_and_other(ctx: &Ctx<'_>) -> (Subscription, Subscription) {
        create_customer(ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let subscribe_to = |price: &str| subscribe(ctx, &user("u1"), &one(&PriceId::parse(price).unwrap()), 0).unwrap().subscription;
        (subscribe_to("price_basic"), subscribe_to("price_other"))
    }

    #[test]
    fn a_subscription_moves_to_another_price_unless_another_one_has_it() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let (basic, other) = subscribed_to_basic_and_other(&ctx);
        let price = |id: &str| PriceId::parse(id).unwrap();
        let at_stripe = |sub: &Subscription| {
            let id = sub.stripe_subscription_id.clone().unwrap();
            fakes.stripe.subscriptions.borrow().iter().find(|s| s.id == id).unwrap().price_id.clone().unwrap()
        };

        let moved = change_item(&ctx, &user("u1"), &basic.id, Some(&price("price_pro")), None).unwrap();
        assert_eq!(moved.price_id, "price_pro");
        assert_eq!(at_stripe(&basic), "price_pro");
        assert_eq!(fakes.store.subscription("u1", &basic.id).unwrap().unwrap().price_id, "price_pro");
        // The same price again: nothing to do. Another live subscription's price: 409.
        assert_eq!(change_item(&ctx, &user("u1"), &basic.id, Some(&price("price_pro")), None).unwrap(), moved);
        let err = change_item(&ctx, &user("u1"), &basic.id, Some(&price("price_other")), None).unwrap_err();
        assert!(matches!(err, Error::Conflict { code: "already_subscribed", .. }), "{err:?}");
        assert_eq!(at_stripe(&basic), "price_pro");
        // The old price is free again.
        assert!(subscribe(&ctx, &user("u1"), &one(&price("price_basic")), 0).is_ok());
        // A price Stripe does not know: 422 naming price_id; nothing changed.
        let err = change_item(&ctx, &user("u1"), &other.id, Some(&price("price_unknown")), None).unwrap_err();
        assert_eq!(err.status(), 422);
        assert_eq!(fakes.store.subscription("u1", &other.id).unwrap().unwrap().price_id, "price_other");
        // Someone else's; an ended one.
        assert_eq!(change_item(&ctx, &user("u2"), &other.id, Some(&price("price_x")), None).unwrap_err().status(), 404);
        cancel_subscription(&ctx, &user("u1"), &other.id, false).unwrap();
        let err = change_item(&ctx, &user("u1"), &other.id, Some(&price("price_x")), None).unwrap_err();
        assert!(matches!(err, Error::Conflict { code: "subscription_ended", .. }), "{err:?}");
        assert!(fakes.store.audit_events().contains(&"subscription.price_changed".to_string()));
    }

    #[test]
    fn a_subscription_bills_its_quantity_which_changes_alone_or_with_the_price() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let price = |id: &str| PriceId::parse(id).unwrap();
        let seats = |n: i64| Quantity::parse(n).unwrap();
        let at_stripe = |sub: &Subscription| {
            let id = sub.stripe_subscription_id.clone().unwrap();
            let remote = fakes.stripe.subscriptions.borrow().iter().find(|s| s.id == id).cloned().unwrap();
            (remote.price_id.unwrap(), remote.quantity.unwrap())
        };
        let order = SubscriptionOrder { price: price("price_team"), quantity: seats(5), promotion_code: None };
        let sub = subscribe(&ctx, &user("u1"), &order, 0).unwrap().subscription;
        assert_eq!(sub.quantity, 5);
        assert_eq!(at_stripe(&sub), ("price_team".to_string(), 5));
        assert_eq!(fakes.store.subscription("u1", &sub.id).unwrap().unwrap().quantity, 5);

        // The quantity alone: the price stays.
        let grown = change_item(&ctx, &user("u1"), &sub.id, None, Some(seats(8))).unwrap();
        assert_eq!((grown.price_id.as_str(), grown.quantity), ("price_team", 8));
        assert_eq!(at_stripe(&sub), ("price_team".to_string(), 8));
        assert!(fakes.store.audit_events().contains(&"subscription.quantity_changed".to_string()));
        // What it has already: nothing is sent (Stripe down, the mirror's answer stands).
        fakes.stripe.down.set(true);
        assert_eq!(change_item(&ctx, &user("u1"), &sub.id, Some(&price("price_team")), Some(seats(8))).unwrap(), grown);
        fakes.stripe.down.set(false);
        // What the mirror has, but not Stripe (10 seats set in the customer portal, its webhook
        // not come yet): checked at Stripe, and changed back to 8 there.
        fakes.stripe.subscriptions.borrow_mut()[0].quantity = Some(10);
        assert_eq!(change_item(&ctx, &user("u1"), &sub.id, None, Some(seats(8))).unwrap().quantity, 8);
        assert_eq!(at_stripe(&sub), ("price_team".to_string(), 8));

        // The price alone keeps the quantity Stripe has, even when our mirror has not seen it yet.
        fakes.stripe.subscriptions.borrow_mut()[0].quantity = Some(12);
        let moved = change_item(&ctx, &user("u1"), &sub.id, Some(&price("price_pro")), None).unwrap();
        assert_eq!((moved.price_id.as_str(), moved.quantity), ("price_pro", 12));
        // Both at once.
        let both = change_item(&ctx, &user("u1"), &sub.id, Some(&price("price_team")), Some(seats(2))).unwrap();
        assert_eq!((both.price_id.as_str(), both.quantity), ("price_team", 2));
        assert_eq!(at_stripe(&sub), ("price_team".to_string(), 2));

        // A preview of more seats: the credit and charge for the units, the renewal with them.
        let preview = upcoming_invoice(&ctx, &user("u1"), &sub.id, None, Some(seats(3))).unwrap();
        let lines: Vec<_> = preview.lines.iter().map(|l| (l.price_id.clone().unwrap_or_default(), l.amount)).collect();
        assert_eq!(lines, [("price_team".to_string(), -800), ("price_team".to_string(), 1800), ("price_team".to_string(), 3000)]);
        assert_eq!(at_stripe(&sub), ("price_team".to_string(), 2), "only previewed");
        assert_eq!(upcoming_invoice(&ctx, &user("u1"), &sub.id, None, Some(seats(2))).unwrap().lines.len(), 1, "the quantity it has: the renewal");

        // An ended subscription's quantity cannot change.
        cancel_subscription(&ctx, &user("u1"), &sub.id, false).unwrap();
        let err = change_item(&ctx, &user("u1"), &sub.id, None, Some(seats(4))).unwrap_err();
        assert!(matches!(err, Error::Conflict { code: "subscription_ended", .. }), "{err:?}");
    }

    #[test]
    fn a_promotion_code_is_redeemed_by_its_id_and_an_unknown_one_makes_nothing() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let order = |price: &str, code: &str| SubscriptionOrder {
            promotion_code: Some(PromotionCode::parse(code).unwrap()),
            ..one(&PriceId::parse(price).unwrap())
        };
        let err = subscribe(&ctx, &user("u1"), &order("price_basic", "NOTHING"), 0).unwrap_err();
        let problem = err.problem();
        assert_eq!((problem.status, problem.errors[0].field.as_str(), problem.errors[0].code.as_str()), (422, "promotion_code", "not_found"));
        assert!(fakes.stripe.subscriptions.borrow().is_empty(), "nothing made at Stripe");
        assert!(fakes.store.subscriptions("u1").unwrap().is_empty(), "nor here");
        let sub = subscribe(&ctx, &user("u1"), &order("price_basic", "LAUNCH20"), 0).unwrap().subscription;
        let stripe_id = sub.stripe_subscription_id.unwrap();
        assert_eq!(*fakes.stripe.redeemed.borrow(), [(stripe_id, "promo_launch20".to_string())]);
    }

    #[test]
    fn the_billing_address_is_kept_at_stripe_and_refusals_name_the_field() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let address = BillingAddress { line1: "1 Main St".into(), line2: None, city: Some("Springfield".into()), postal_code: Some("12345".into()), state: None, country: "US".into() };
        assert_eq!(set_billing_address(&ctx, &user("u1"), &address).unwrap_err().status(), 404, "not a customer yet");
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        assert!(matches!(billing_address(&ctx, &user("u1")).unwrap_err(), Error::NotFound { code: "no_billing_address", .. }));
        assert_eq!(set_billing_address(&ctx, &user("u1"), &address).unwrap(), address);
        assert_eq!(billing_address(&ctx, &user("u1")).unwrap(), address);
        let refused = BillingAddress { postal_code: Some("00000".into()), ..address.clone() };
        let problem = set_billing_address(&ctx, &user("u1"), &refused).unwrap_err().problem();
        assert_eq!((problem.status, problem.errors[0].field.as_str()), (422, "postal_code"));
        assert_eq!(billing_address(&ctx, &user("u1")).unwrap(), address, "unchanged");
        assert!(fakes.store.audit_events().contains(&"customer.billing_address_set".to_string()));
    }

    #[test]
    fn tax_ids_are_added_listed_and_deleted_on_the_callers_stripe_customer_only() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let vat = NewTaxId::new("eu_vat", "DE123456789").unwrap();
        assert_eq!(add_tax_id(&ctx, &user("u1"), &vat).unwrap_err().status(), 404, "not a customer yet");
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        create_customer(&ctx, &user("u2"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let added = add_tax_id(&ctx, &user("u1"), &vat).unwrap();
        assert_eq!((added.kind.as_str(), added.value.as_str(), added.country.as_deref()), ("eu_vat", "DE123456789", Some("DE")));
        assert_eq!(tax_ids(&ctx, &user("u1")).unwrap(), std::slice::from_ref(&added));
        assert!(tax_ids(&ctx, &user("u2")).unwrap().is_empty());
        // Stripe finds the value invalid: 422 naming `value`, nothing added.
        let err = add_tax_id(&ctx, &user("u1"), &NewTaxId::new("eu_vat", "DE000").unwrap()).unwrap_err();
        let problem = err.problem();
        assert_eq!((problem.status, problem.errors[0].field.as_str()), (422, "value"));
        assert_eq!(tax_ids(&ctx, &user("u1")).unwrap().len(), 1);
        // Another user cannot delete it; its owner can, once.
        assert_eq!(delete_tax_id(&ctx, &user("u2"), &added.id).unwrap_err().status(), 404);
        delete_tax_id(&ctx, &user("u1"), &added.id).unwrap();
        assert_eq!(delete_tax_id(&ctx, &user("u1"), &added.id).unwrap_err().status(), 404);
        assert!(tax_ids(&ctx, &user("u1")).unwrap().is_empty());
        let audit = fakes.store.audit_events();
        assert!(audit.contains(&"customer.tax_id_added".to_string()) && audit.contains(&"customer.tax_id_deleted".to_string()));
    }

    #[test]
    fn an_open_invoice_is_paid_on_request_and_its_subscription_follows() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        create_customer(&ctx, &user("u2"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        fakes.stripe.card_needs_3ds.set(true);
        let sub = subscribe(&ctx, &user("u1"), &one(&PriceId::parse("price_basic").unwrap()), 0).unwrap().subscription;
        fakes.stripe.card_needs_3ds.set(false);
        assert_eq!(sub.status, SubscriptionStatus::Incomplete);
        let stripe_customer = fakes.store.customer("u1").unwrap().unwrap().stripe_customer_id.unwrap();
        let invoice = |id: &str, status: &str| StripeInvoice {
            invoice: Invoice { id: id.into(), number: None, status: Some(status.into()), amount_due: 1500, amount_paid: 0, currency: "eur".into(), created: 1000, hosted_invoice_url: None, invoice_pdf: None },
            customer: Some(stripe_customer.clone()),
            subscription: sub.stripe_subscription_id.clone(),
            pending_payment: None,
        };
        fakes.stripe.invoices.borrow_mut().extend([invoice("in_open", "open"), invoice("in_draft", "draft")]);

        // Someone else's invoice is not found; a draft cannot be paid; a declined card is 402.
        assert_eq!(pay_invoice(&ctx, &user("u2"), "in_open").unwrap_err().status(), 404);
        assert_eq!(pay_invoice(&ctx, &user("u1"), "in_nothing").unwrap_err().status(), 404);
        assert!(matches!(pay_invoice(&ctx, &user("u1"), "in_draft").unwrap_err(), Error::Conflict { code: "invoice_not_payable", .. }));
        fakes.stripe.card_declines.set(true);
        assert_eq!(pay_invoice(&ctx, &user("u1"), "in_open").unwrap_err().status(), 402);
        fakes.stripe.card_declines.set(false);
        // The bank asks for 3-D Secure: the invoice stays open and its payment waits for the user.
        let waiting = PendingPayment { status: "requires_action".into(), client_secret: "pi_1_secret_x".into() };
        fakes.stripe.invoices.borrow_mut()[0].pending_payment = Some(waiting.clone());
        fakes.stripe.card_needs_3ds.set(true);
        let asked = pay_invoice(&ctx, &user("u1"), "in_open").unwrap();
        assert_eq!((asked.invoice.status.as_deref(), asked.pending_payment), (Some("open"), Some(waiting)));
        fakes.stripe.card_needs_3ds.set(false);

        // Paid: the subscription is active in the mirror at once; paying again is 409.
        let paid = pay_invoice(&ctx, &user("u1"), "in_open").unwrap();
        assert_eq!((paid.invoice.status.as_deref(), paid.invoice.amount_paid), (Some("paid"), 1500));
        assert_eq!(fakes.store.subscription("u1", &sub.id).unwrap().unwrap().status, SubscriptionStatus::Active);
        assert!(matches!(pay_invoice(&ctx, &user("u1"), "in_open").unwrap_err(), Error::Conflict { code: "invoice_paid", .. }));
        let audit = fakes.store.audit_events();
        assert!(audit.contains(&"invoice.paid_by_user".to_string()) && audit.contains(&"invoice.payment_failed".to_string()));
    }

    #[test]
    fn the_next_invoice_is_previewed_for_the_renewal_or_a_change_of_price() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let (basic, other) = subscribed_to_basic_and_other(&ctx);
        let price = |id: &str| PriceId::parse(id).unwrap();
        let prices = |preview: &InvoicePreview| preview.lines.iter().map(|l| (l.price_id.clone().unwrap_or_default(), l.amount, l.proration)).collect::<Vec<_>>();

        // The renewal: the current price, charged when the period ends.
        let renewal = upcoming_invoice(&ctx, &user("u1"), &basic.id, None, None).unwrap();
        assert_eq!(prices(&renewal), [("price_basic".to_string(), 1000, false)]);
        assert_eq!((renewal.amount_due, renewal.next_payment_attempt), (1000, basic.current_period_end));
        // The current price previews the renewal too.
        assert_eq!(upcoming_invoice(&ctx, &user("u1"), &basic.id, Some(&price("price_basic")), None).unwrap(), renewal);

        // A move to another price: the credit, the charge, then the renewal on the new price.
        let moved = upcoming_invoice(&ctx, &user("u1"), &basic.id, Some(&price("price_pro")), None).unwrap();
        assert_eq!(
            prices(&moved),
            [("price_basic".to_string(), -400, true), ("price_pro".to_string(), 600, true), ("price_pro".to_string(), 1000, false)]
        );
        assert_eq!(moved.amount_due, 1200);
        // Only previewed: the subscription did not move, here or at Stripe.
        assert_eq!(fakes.store.subscription("u1", &basic.id).unwrap().unwrap().price_id, "price_basic");
        assert_eq!(fakes.stripe.subscriptions.borrow()[0].price_id.as_deref(), Some("price_basic"));

        // Refused as the change would be: another live subscription's price, an unknown price.
        let err = upcoming_invoice(&ctx, &user("u1"), &basic.id, Some(&price("price_other")), None).unwrap_err();
        assert!(matches!(err, Error::Conflict { code: "already_subscribed", .. }), "{err:?}");
        assert_eq!(upcoming_invoice(&ctx, &user("u1"), &basic.id, Some(&price("price_unknown")), None).unwrap_err().status(), 422);
        // Someone else's subscription is not found; Stripe down is 503.
        assert_eq!(upcoming_invoice(&ctx, &user("u2"), &basic.id, None, None).unwrap_err().status(), 404);
        fakes.stripe.down.set(true);
        assert_eq!(upcoming_invoice(&ctx, &user("u1"), &basic.id, None, None).unwrap_err().status(), 503);
        fakes.stripe.down.set(false);

        // Set to end at the period's end, or ended: no next invoice; a change of an ended one is 409.
        cancel_subscription(&ctx, &user("u1"), &basic.id, true).unwrap();
        let err = upcoming_invoice(&ctx, &user("u1"), &basic.id, None, None).unwrap_err();
        assert!(matches!(err, Error::NotFound { code: "no_upcoming_invoice", .. }), "{err:?}");
        cancel_subscription(&ctx, &user("u1"), &other.id, false).unwrap();
        let err = upcoming_invoice(&ctx, &user("u1"), &other.id, None, None).unwrap_err();
        assert!(matches!(err, Error::NotFound { code: "no_upcoming_invoice", .. }), "{err:?}");
        let err = upcoming_invoice(&ctx, &user("u1"), &other.id, Some(&price("price_pro")), None).unwrap_err();
        assert!(matches!(err, Error::Conflict { code: "subscription_ended", .. }), "{err:?}");
    }

    #[test]
    fn each_user_has_a_budget_of_stripe_requests_a_minute() {
        let fakes = Fakes::up();
        for _ in 0..3 {
            spend_stripe_budget(&fakes.store, &user("u1"), 1_000_020, 3).unwrap();
        }
        let err = spend_stripe_budget(&fakes.store, &user("u1"), 1_000_050, 3).unwrap_err();
        assert_eq!(err, Error::RateLimited { retry_after: 30 }, "the minute 1_000_020..1_000_080 ends in 30 s");
        assert!(spend_stripe_budget(&fakes.store, &user("u2"), 1_000_050, 3).is_ok(), "another user has their own");
        assert!(spend_stripe_budget(&fakes.store, &user("u1"), 1_000_080, 3).is_ok(), "a new minute");
    }

    #[test]
    fn a_card_from_the_browser_becomes_the_default_and_no_one_elses_can() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        create_customer(&ctx, &user("u2"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let pm = |id: &str| PaymentMethodId::parse(id).unwrap();
        let intent = create_setup_intent(&ctx, &user("u1")).unwrap();
        assert!(intent.client_secret.starts_with(&intent.id));
        assert_eq!(default_payment_method(&ctx, &user("u1")).unwrap(), None);

        fakes.stripe.add_card("pm_one", "4242");
        let set = set_default_payment_method(&ctx, &user("u1"), &pm("pm_one")).unwrap();
        assert_eq!(set.card.as_ref().map(|c| c.last4.as_str()), Some("4242"));
        assert_eq!(default_payment_method(&ctx, &user("u1")).unwrap(), Some(set));
        // Setting it again (already attached to u1) is fine.
        assert!(set_default_payment_method(&ctx, &user("u1"), &pm("pm_one")).is_ok());

        // u2 cannot take u1's card, and is told what it would hear for a card that does not exist.
        let taken = set_default_payment_method(&ctx, &user("u2"), &pm("pm_one")).unwrap_err();
        let missing = set_default_payment_method(&ctx, &user("u2"), &pm("pm_none")).unwrap_err();
        assert_eq!(format!("{taken:?}"), format!("{missing:?}"));
        assert_eq!(taken.status(), 422);
        assert_eq!(default_payment_method(&ctx, &user("u2")).unwrap(), None);
        assert_eq!(fakes.stripe.payment_method("pm_one").unwrap().unwrap().customer.as_deref(), Some("cus_1"));

        // A declined card is 402 and changes nothing; a free user has no customer to set it on.
        fakes.stripe.add_card("pm_declined", "0002");
        assert_eq!(set_default_payment_method(&ctx, &user("u1"), &pm("pm_declined")).unwrap_err().status(), 402);
        assert_eq!(default_payment_method(&ctx, &user("u1")).unwrap().map(|m| m.id), Some("pm_one".into()));
        assert_eq!(create_setup_intent(&ctx, &user("u3")).unwrap_err().status(), 404);
        let events = fakes.store.audit_events();
        assert_eq!(events.iter().filter(|e| *e == "customer.payment_method_set").count(), 2, "{events:?}");
    }

    #[test]
    fn a_card_is_removed_only_when_nothing_would_renew_with_it() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let no_card = remove_default_payment_method(&ctx, &user("u1")).unwrap_err();
        assert!(matches!(no_card, Error::NotFound { code: "no_payment_method", .. }), "{no_card:?}");
        fakes.stripe.add_card("pm_one", "4242");
        set_default_payment_method(&ctx, &user("u1"), &PaymentMethodId::parse("pm_one").unwrap()).unwrap();
        let owner = || fakes.stripe.payment_method("pm_one").unwrap().unwrap().customer;

        // A subscription that renews needs the card; one set to end at its period's end does not.
        let sub = subscribe(&ctx, &user("u1"), &one(&PriceId::parse("price_basic").unwrap()), 0).unwrap().subscription;
        let in_use = remove_default_payment_method(&ctx, &user("u1")).unwrap_err();
        assert!(matches!(&in_use, Error::Conflict { code: "payment_method_in_use", detail } if detail.contains(&sub.id)), "{in_use:?}");
        assert_eq!(owner().as_deref(), Some("cus_1"), "nothing detached");
        assert!(default_payment_method(&ctx, &user("u1")).unwrap().is_some());
        cancel_subscription(&ctx, &user("u1"), &sub.id, true).unwrap();

        remove_default_payment_method(&ctx, &user("u1")).unwrap();
        assert_eq!(owner(), None, "detached: Stripe can never charge it again");
        assert_eq!(default_payment_method(&ctx, &user("u1")).unwrap(), None);
        assert_eq!(remove_default_payment_method(&ctx, &user("u1")).unwrap_err().status(), 404);

        // A default that is no longer the customer's card (Stripe clears it when it detaches one,
        // but a default may still name a card moved elsewhere) is only cleared; Stripe down is
        // 503 and removes nothing.
        fakes.stripe.add_card("pm_two", "1111");
        set_default_payment_method(&ctx, &user("u1"), &PaymentMethodId::parse("pm_two").unwrap()).unwrap();
        fakes.stripe.down.set(true);
        assert_eq!(remove_default_payment_method(&ctx, &user("u1")).unwrap_err().status(), 503);
        fakes.stripe.down.set(false);
        fakes.stripe.payment_methods.borrow_mut().iter_mut().filter(|pm| pm.summary.id == "pm_two").for_each(|pm| pm.customer = None);
        remove_default_payment_method(&ctx, &user("u1")).unwrap();
        assert_eq!(default_payment_method(&ctx, &user("u1")).unwrap(), None);
        let events = fakes.store.audit_events();
        assert_eq!(events.iter().filter(|e| *e == "customer.payment_method_removed").count(), 2, "{events:?}");
        assert_eq!(remove_default_payment_method(&ctx, &user("u3")).unwrap_err().status(), 404, "not a customer");
    }

    /// Checkout takes the order `subscribe` takes, checked the same way; one page is open at a time.
    #[test]
    fn a_checkout_session_is_checked_as_a_subscription_and_closes_the_one_before() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let urls = CheckoutUrls { success: "https://app.example.org/billing/done", cancel: None };
        let basic = PriceId::parse("price_basic").unwrap();
        let order = SubscriptionOrder { quantity: Quantity::parse(4).unwrap(), ..one(&basic) };
        assert_eq!(create_checkout_session(&ctx, &user("u1"), &order, 14, urls).unwrap_err().status(), 404, "not a customer");
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();

        let first = create_checkout_session(&ctx, &user("u1"), &order, 14, urls).unwrap();
        assert_eq!(first.url, format!("https://checkout.stripe.test/c/pay/{}", first.id));
        let sessions = fakes.stripe.checkout_sessions.borrow().clone();
        assert_eq!((sessions[0].price.as_str(), sessions[0].quantity, sessions[0].trial_days), ("price_basic", 4, Some(14)), "the first subscription's trial");
        assert_eq!(sessions[0].success_url, "https://app.example.org/billing/done");
        assert!(fakes.store.subscriptions("u1").unwrap().is_empty(), "nothing is mirrored before the page is paid");
        assert!(fakes.store.audit_events().contains(&"checkout.session_created".to_string()));

        // A second page (another price, say) closes the first: both could not be paid.
        let second = create_checkout_session(&ctx, &user("u1"), &one(&PriceId::parse("price_pro").unwrap()), 14, urls).unwrap();
        let open: Vec<_> = fakes.stripe.checkout_sessions.borrow().iter().filter(|s| s.open).map(|s| s.id.clone()).collect();
        assert_eq!(open, [second.id.clone()]);

        // Subscribing with the card on file closes an open page too.
        subscribe(&ctx, &user("u1"), &one(&PriceId::parse("price_team").unwrap()), 14).unwrap();
        assert!(fakes.stripe.checkout_sessions.borrow().iter().all(|s| !s.open), "no page left to pay");
        // An unknown promotion code and a price already paid for are refused before any page is made.
        let coded = SubscriptionOrder { promotion_code: PromotionCode::parse("NOPE").ok(), ..one(&basic) };
        let err = create_checkout_session(&ctx, &user("u1"), &coded, 14, urls).unwrap_err();
        assert_eq!(err.problem().errors[0].field, "promotion_code");
        subscribe(&ctx, &user("u1"), &one(&basic), 14).unwrap();
        let err = create_checkout_session(&ctx, &user("u1"), &one(&basic), 14, urls).unwrap_err();
        assert!(matches!(err, Error::Conflict { code: "already_subscribed", .. }), "{err:?}");
        assert_eq!(fakes.stripe.checkout_sessions.borrow().len(), 2);
        let promoted = SubscriptionOrder { promotion_code: PromotionCode::parse("LAUNCH20").ok(), ..one(&PriceId::parse("price_enterprise").unwrap()) };
        create_checkout_session(&ctx, &user("u1"), &promoted, 14, urls).unwrap();
        let last = fakes.stripe.checkout_sessions.borrow().last().cloned().unwrap();
        assert_eq!((last.promotion.as_deref(), last.trial_days), (Some("promo_launch20"), None), "the trial was used by the subscription");
        // Leaving billing closes the page left open.
        delete_customer(&ctx, &user("u1")).unwrap();
        assert!(fakes.stripe.checkout_sessions.borrow().iter().all(|s| !s.open), "no page left to pay after leaving");
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        fakes.stripe.down.set(true);
        assert_eq!(create_checkout_session(&ctx, &user("u1"), &one(&PriceId::parse("price_x").unwrap()), 14, urls).unwrap_err().status(), 503);
    }

    /// The success page reads its session: once paid, the subscription is in the mirror at once,
    /// webhook or not, under the id chosen with the page; nobody else reads it.
    #[test]
    fn a_paid_checkout_session_brings_its_subscription_when_read() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let urls = CheckoutUrls { success: "https://app.example.org/done", cancel: None };
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        create_customer(&ctx, &user("u2"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let page = create_checkout_session(&ctx, &user("u1"), &one(&PriceId::parse("price_basic").unwrap()), 7, urls).unwrap();
        let read = checkout_session(&ctx, &user("u1"), &page.id).unwrap();
        assert_eq!((read.session.status.as_str(), read.subscription), ("open", None));
        assert_eq!(checkout_session(&ctx, &user("u2"), &page.id).unwrap_err().status(), 404, "another customer's");
        assert_eq!(checkout_session(&ctx, &user("u1"), "cs_unknown").unwrap_err().status(), 404);

        let stripe_id = fakes.stripe.complete_checkout(&page.id);
        let read = checkout_session(&ctx, &user("u1"), &page.id).unwrap();
        let sub = read.subscription.expect("mirrored on the read");
        let local_id = fakes.stripe.checkout_sessions.borrow()[0].local_id.clone();
        assert_eq!((read.session.status.as_str(), sub.id.as_str(), sub.stripe_subscription_id.as_deref()), ("complete", local_id.as_str(), Some(stripe_id.as_str())));
        assert_eq!(sub.status, SubscriptionStatus::Trialing);
        assert!(fakes.store.trial_granted("u1").unwrap(), "its trial is the user's one");
        // Read again (a reload): the same row, brought up to date, not a second one.
        fakes.stripe.set_status(&stripe_id, SubscriptionStatus::Active);
        let again = checkout_session(&ctx, &user("u1"), &page.id).unwrap().subscription.unwrap();
        assert_eq!((again.id, again.status), (local_id, SubscriptionStatus::Active));
        assert_eq!(fakes.store.subscriptions("u1").unwrap().len(), 1);
        fakes.stripe.down.set(true);
        assert_eq!(checkout_session(&ctx, &user("u1"), &page.id).unwrap_err().status(), 503);
    }

    #[test]
    fn a_portal_session_is_for_the_callers_own_stripe_customer() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let url = create_portal_session(&ctx, &user("u1"), Some("https://app.example.org/billing")).unwrap();
        assert_eq!(url, "https://billing.stripe.test/p/session/cus_1?return=https://app.example.org/billing");
        assert!(fakes.store.audit_events().contains(&"customer.portal_session".to_string()));
        assert_eq!(create_portal_session(&ctx, &user("u2"), None).unwrap_err().status(), 404, "not a customer");
        fakes.stripe.down.set(true);
        assert_eq!(create_portal_session(&ctx, &user("u1"), None).unwrap_err().status(), 503);
    }

    #[test]
    fn a_deleted_user_cannot_subscribe_and_auth_down_without_a_profile_is_503() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let price = PriceId::parse("price_basic").unwrap();
        let gone = FakeProfiles::users_gone();
        let err = subscribe(&Ctx { profiles: &gone, ..fakes.ctx(1000) }, &user("u1"), &one(&price), 0).unwrap_err();
        assert!(matches!(err, Error::NotFound { code: "profile_not_found", .. }), "{err:?}");
        let down = FakeProfiles::down();
        let err = subscribe(&Ctx { profiles: &down, ..fakes.ctx(1000) }, &user("u1"), &one(&price), 0).unwrap_err();
        assert_eq!(err.status(), 503);
        assert!(fakes.stripe.subscriptions.borrow().is_empty(), "nothing reached Stripe");
        assert!(fakes.store.subscriptions("u1").unwrap().is_empty());
        assert!(subscribe(&ctx, &user("u1"), &one(&price), 0).is_ok(), "the live user still can");
    }

    #[test]
    fn a_subscription_stripe_has_but_we_lost_is_adopted_not_duplicated() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let customer = create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        let price = PriceId::parse("price_basic").unwrap();
        fakes
            .stripe
            .create_subscription(&NewSubscription { customer: customer.stripe_customer_id.as_deref().unwrap(), order: &one(&price), promotion: None, trial_days: None, user_id: "u1", local_id: "lost" }, "k")
            .unwrap();
        assert_eq!(subscribe(&ctx, &user("u1"), &one(&price), 0).unwrap_err().status(), 409);
        assert_eq!(fakes.stripe.subscriptions.borrow().len(), 1);
        assert_eq!(fakes.store.subscriptions("u1").unwrap().len(), 1);
    }

    /// The name and email Stripe has for u1's customer, as the fake records them.
    fn stripe_updates(fakes: &Fakes) -> Vec<String> {
        fakes.stripe.profile_updates.borrow().iter().map(|(_, _, email)| email.clone()).collect()
    }

    #[test]
    fn a_profile_changed_at_auth_reaches_stripe_once_on_the_next_read() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        // Created with the current profile: nothing to send.
        invoices(&ctx, &user("u1"), 10, None).unwrap();
        assert!(stripe_updates(&fakes).is_empty());
        // The user changes their email at auth; the next invoice read sends it, once.
        *fakes.profiles.email_domain.borrow_mut() = "new.example".into();
        let (bill_to, _) = invoices(&ctx, &user("u1"), 10, None).unwrap();
        assert_eq!(bill_to.profile.email, "u1@new.example");
        invoices(&fakes.ctx(1001), &user("u1"), 10, None).unwrap();
        assert_eq!(stripe_updates(&fakes), ["u1@new.example"]);
        assert!(fakes.store.stripe_profile("u1").unwrap().is_some());
        // Back to the first email: sent again (a new key, or Stripe would replay the first update).
        *fakes.profiles.email_domain.borrow_mut() = "example.org".into();
        invoices(&fakes.ctx(1002), &user("u1"), 10, None).unwrap();
        assert_eq!(stripe_updates(&fakes), ["u1@new.example", "u1@example.org"]);
    }

    #[test]
    fn a_stale_profile_is_not_sent_and_a_failed_sync_does_not_fail_the_read() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        let customer = create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        *fakes.profiles.email_domain.borrow_mut() = "new.example".into();
        // A copy served while auth is down may be older than what Stripe has.
        fakes.profiles.source.set(ProfileSource::StaleCache { age: 120 });
        invoices(&ctx, &user("u1"), 10, None).unwrap();
        assert!(stripe_updates(&fakes).is_empty());
        // Stripe refuses the update (here: it lost the customer): the read still answers, and
        // nothing is recorded, so the next read tries again.
        fakes.profiles.source.set(ProfileSource::Auth);
        let stripe_id = customer.stripe_customer_id.unwrap();
        let kept = fakes.stripe.customers.borrow().clone();
        fakes.stripe.customers.borrow_mut().clear();
        let before = fakes.store.stripe_profile("u1").unwrap();
        assert!(invoices(&ctx, &user("u1"), 10, None).is_ok());
        assert_eq!(fakes.store.stripe_profile("u1").unwrap(), before);
        *fakes.stripe.customers.borrow_mut() = kept;
        invoices(&ctx, &user("u1"), 10, None).unwrap();
        assert_eq!(*fakes.stripe.profile_updates.borrow(), [(stripe_id, "Name u1".to_string(), "u1@new.example".to_string())]);
    }

    #[test]
    fn a_new_subscription_first_sends_the_current_profile() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        *fakes.profiles.email_domain.borrow_mut() = "new.example".into();
        subscribe(&ctx, &user("u1"), &one(&PriceId::parse("price_basic").unwrap()), 0).unwrap();
        assert_eq!(stripe_updates(&fakes), ["u1@new.example"]);
    }

    #[test]
    fn profile_digests_are_keyed_and_tell_pairs_apart() {
        let profile = |name: &str, email: &str| Profile { id: "u1".into(), name: name.into(), email: email.into(), email_verified: false };
        let digest = profile_digest(b"sk_a", &profile("Ada", "ada@example.org"));
        assert_eq!(digest.len(), 64);
        assert_ne!(digest, profile_digest(b"sk_b", &profile("Ada", "ada@example.org")));
        // The same bytes split differently between name and email are another profile.
        assert_ne!(profile_digest(b"sk_a", &profile("Ada", "x@y.z")), profile_digest(b"sk_a", &profile("Adax", "@y.z")));
        let key = profile_update_key(&user("u1"));
        assert!(key.starts_with("customer-profile:u1:") && key.len() <= 255, "{key}");
        assert_ne!(key, profile_update_key(&user("u1")), "every update has its own key");
    }

    #[test]
    fn delete_cancels_at_stripe_first() {
        let fakes = Fakes::up();
        let ctx = fakes.ctx(1000);
        create_customer(&ctx, &user("u1"), &AreaIds::parse(&[1]).unwrap()).unwrap();
        subscribe(&ctx, &user("u1"), &one(&PriceId::parse("price_basic").unwrap()), 0).unwrap();
        delete_customer(&ctx, &user("u1")).unwrap();
        assert!(fakes.stripe.customers.borrow().is_empty());
        assert!(fakes.stripe.subscriptions.borrow().iter().all(|s| s.status == SubscriptionStatus::Canceled));
        assert_eq!(get_customer(&fakes.store, &user("u1")).unwrap_err().status(), 404);
    }
}
