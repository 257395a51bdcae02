//! In-memory stand-ins for the ports, for the native unit tests of the rules.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::*;

#[derive(Debug, Clone, Default)]
struct State {
    customers: BTreeMap<String, Customer>,
    provisioning: BTreeMap<String, (u32, i64, Option<String>, i64)>,
    /// Makes every fake provisioning start at a distinct millisecond.
    provisioning_started: u64,
    subscriptions: Vec<Subscription>,
    events: BTreeMap<String, String>,
    profile_digests: BTreeMap<String, SentProfile>,
    idem: BTreeMap<(String, String), IdemRecord>,
    audit: Vec<String>,
    /// user id -> (window start, calls)
    user_calls: BTreeMap<String, (i64, u64)>,
    /// user id -> trial days given
    trials: BTreeMap<String, u32>,
}

/// Transactions by snapshot: `begin` saves, `rollback` restores.
#[derive(Default)]
pub struct MemoryStore {
    state: RefCell<State>,
    snapshot: RefCell<Option<State>>,
    /// When set, the database is lost right after the next COMMIT (which itself succeeds):
    /// reading a customer after it fails as unavailable.
    pub lost_after_commit: Cell<bool>,
    lost: Cell<bool>,
}

impl MemoryStore {
    /// The action of every audit row written, in order.
    pub fn audit_events(&self) -> Vec<String> {
        self.state.borrow().audit.iter().filter_map(|row| row.split_once(' ').map(|(_, action)| action.to_string())).collect()
    }

    fn reachable(&self) -> Result<(), StoreError> {
        if self.lost.get() { Err(StoreError::Unavailable("connection lost".into())) } else { Ok(()) }
    }
}

impl Store for MemoryStore {
    fn begin(&self) -> Result<(), StoreError> {
        *self.snapshot.borrow_mut() = Some(self.state.borrow().clone());
        Ok(())
    }
    fn commit(&self) -> Result<(), StoreError> {
        self.reachable()?;
        *self.snapshot.borrow_mut() = None;
        self.lost.set(self.lost_after_commit.get());
        Ok(())
    }
    fn rollback(&self) {
        if let Some(saved) = self.snapshot.borrow_mut().take() {
            *self.state.borrow_mut() = saved;
        }
    }
    fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        self.reachable()?;
        Ok(self.state.borrow().customers.get(id).cloned())
    }
    fn customers(&self, after: Option<&str>, limit: u32) -> Result<Vec<Customer>, StoreError> {
        Ok(self
            .state
            .borrow()
            .customers
            .values()
            .filter(|c| after.is_none_or(|a| c.id.as_str() > a))
            .take(limit as usize)
            .cloned()
            .collect())
    }
    fn lock_customer(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state.borrow().customers.contains_key(id))
    }
    fn lock_customer_by_stripe_id(&self, stripe_customer_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .state
            .borrow()
            .customers
            .values()
            .find(|c| c.stripe_customer_id.as_deref() == Some(stripe_customer_id))
            .map(|c| c.id.clone()))
    }
    fn insert_customer(&self, id: &str, stripe_customer_id: &str, areas: &AreaIds) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        if state.customers.contains_key(id) {
            return Err(StoreError::Duplicate { constraint: "PRIMARY".into() });
        }
        state.customers.insert(
            id.into(),
            Customer {
                id: id.into(),
                stripe_customer_id: Some(stripe_customer_id.into()),
                area_ids: areas.clone(),
                created_at: 1,
                updated_at: 1,
            },
        );
        Ok(())
    }
    fn replace_areas(&self, id: &str, areas: &AreaIds) -> Result<(), StoreError> {
        if let Some(c) = self.state.borrow_mut().customers.get_mut(id) {
            c.area_ids = areas.clone();
        }
        Ok(())
    }
    fn delete_customer(&self, id: &str) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        state.customers.remove(id);
        state.subscriptions.retain(|s| s.customer_id != id);
        state.profile_digests.remove(id);
        Ok(())
    }
    fn claim_provisioning(&self, id: &str, now: i64, lease_secs: i64) -> Result<Claim, StoreError> {
        let mut state = self.state.borrow_mut();
        match state.provisioning.get_mut(id) {
            None => {
                let started = now * 1000 + i64::try_from(state.provisioning_started).unwrap_or(0);
                state.provisioning_started += 1;
                state.provisioning.insert(id.into(), (1, now + lease_secs, None, started));
                Ok(Claim::Claimed { attempt: 1, resumed: false, last_error: None, started })
            }
            Some((_, lease, _, _)) if *lease > now => Ok(Claim::Busy),
            Some((attempt, lease, last_error, started)) => {
                *lease = now + lease_secs;
                Ok(Claim::Claimed { attempt: *attempt, resumed: true, last_error: last_error.clone(), started: *started })
            }
        }
    }
    fn provisioning_failed(&self, id: &str, error: &str, next_attempt: bool) -> Result<(), StoreError> {
        if let Some((attempt, lease, last_error, _)) = self.state.borrow_mut().provisioning.get_mut(id) {
            *lease = 0;
            *last_error = Some(error.into());
            if next_attempt {
                *attempt += 1;
            }
        }
        Ok(())
    }
    fn delete_provisioning(&self, id: &str) -> Result<(), StoreError> {
        self.state.borrow_mut().provisioning.remove(id);
        Ok(())
    }
    fn subscriptions(&self, customer_id: &str) -> Result<Vec<Subscription>, StoreError> {
        Ok(self.state.borrow().subscriptions.iter().filter(|s| s.customer_id == customer_id).cloned().collect())
    }
    fn subscriptions_of_customers(&self, customer_ids: &[&str]) -> Result<Vec<Subscription>, StoreError> {
        Ok(self.state.borrow().subscriptions.iter().filter(|s| customer_ids.contains(&s.customer_id.as_str())).cloned().collect())
    }
    fn subscription(&self, customer_id: &str, id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self.subscriptions(customer_id)?.into_iter().find(|s| s.id == id))
    }
    fn subscription_by_stripe_id(&self, stripe_subscription_id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self
            .state
            .borrow()
            .subscriptions
            .iter()
            .find(|s| s.stripe_subscription_id.as_deref() == Some(stripe_subscription_id))
            .cloned())
    }
    fn subscription_by_id(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self.state.borrow().subscriptions.iter().find(|s| s.id == id).cloned())
    }
    fn insert_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        if state
            .subscriptions
            .iter()
            .any(|s| s.customer_id == sub.customer_id && s.status.is_live() && sub.status.is_live() && s.price_id == sub.price_id)
        {
            return Err(StoreError::Duplicate { constraint: "uq_subscriptions_live_price".into() });
        }
        state.subscriptions.push(sub.clone());
        Ok(())
    }
    fn update_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        if let Some(s) = state.subscriptions.iter_mut().find(|s| s.id == sub.id) {
            *s = sub.clone();
        }
        Ok(())
    }
    fn insert_event(&self, id: &str, kind: &str, _created: i64, _object_id: Option<&str>) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        if state.events.contains_key(id) {
            return Err(StoreError::Duplicate { constraint: "PRIMARY".into() });
        }
        state.events.insert(id.into(), kind.into());
        Ok(())
    }
    fn set_event_outcome(&self, _id: &str, _outcome: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn stripe_profile(&self, customer_id: &str) -> Result<Option<SentProfile>, StoreError> {
        self.reachable()?;
        Ok(self.state.borrow().profile_digests.get(customer_id).cloned())
    }
    fn set_stripe_profile_digest(&self, customer_id: &str, digest: &str, now: i64) -> Result<(), StoreError> {
        self.reachable()?;
        self.state.borrow_mut().profile_digests.insert(customer_id.into(), SentProfile { digest: digest.into(), sent_at: now });
        Ok(())
    }
    fn count_user_call(&self, user_id: &str, window_start: i64) -> Result<u64, StoreError> {
        self.reachable()?;
        let mut state = self.state.borrow_mut();
        let entry = state.user_calls.entry(user_id.to_string()).or_insert((window_start, 0));
        if entry.0 < window_start {
            *entry = (window_start, 0);
        }
        entry.1 += 1;
        Ok(entry.1)
    }
    fn trial_granted(&self, user_id: &str) -> Result<bool, StoreError> {
        self.reachable()?;
        Ok(self.state.borrow().trials.contains_key(user_id))
    }
    fn record_trial(&self, user_id: &str, _now: i64, days: u32) -> Result<(), StoreError> {
        self.reachable()?;
        match self.state.borrow_mut().trials.entry(user_id.to_string()) {
            std::collections::btree_map::Entry::Occupied(_) => Err(StoreError::Duplicate { constraint: "PRIMARY".into() }),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(days);
                Ok(())
            }
        }
    }
    fn forget_trial(&self, user_id: &str) -> Result<(), StoreError> {
        self.reachable()?;
        self.state.borrow_mut().trials.remove(user_id);
        Ok(())
    }
    fn audit(&self, _now: i64, actor: &str, action: &str, _subject: Option<&str>, _detail: &str) -> Result<(), StoreError> {
        self.state.borrow_mut().audit.push(format!("{actor} {action}"));
        Ok(())
    }
    fn idem_insert(&self, principal: &str, key: &str, request_hash: &str, now: i64) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        let k = (principal.to_string(), key.to_string());
        if state.idem.contains_key(&k) {
            return Err(StoreError::Duplicate { constraint: "PRIMARY".into() });
        }
        state.idem.insert(
            k,
            IdemRecord {
                request_hash: request_hash.into(),
                done: false,
                status: 0,
                content_type: String::new(),
                body: String::new(),
                created_at: now,
            },
        );
        Ok(())
    }
    fn idem_get(&self, principal: &str, key: &str) -> Result<Option<IdemRecord>, StoreError> {
        Ok(self.state.borrow().idem.get(&(principal.to_string(), key.to_string())).cloned())
    }
    fn idem_complete(&self, principal: &str, key: &str, status: u16, content_type: &str, body: &str) -> Result<(), StoreError> {
        if let Some(r) = self.state.borrow_mut().idem.get_mut(&(principal.to_string(), key.to_string())) {
            r.done = true;
            r.status = status;
            r.content_type = content_type.into();
            r.body = body.into();
        }
        Ok(())
    }
    fn idem_delete(&self, principal: &str, key: &str) -> Result<(), StoreError> {
        self.state.borrow_mut().idem.remove(&(principal.to_string(), key.to_string()));
        Ok(())
    }
}

/// A Stripe with memory, faults and idempotency keys.
#[derive(Default)]
pub struct FakeStripe {
    pub customers: RefCell<Vec<StripeCustomerRef>>,
    pub emails: RefCell<BTreeMap<String, String>>,
    /// Every profile update: (Stripe customer, name, email).
    pub profile_updates: RefCell<Vec<(String, String, String)>>,
    pub subscriptions: RefCell<Vec<StripeSubscription>>,
    keys: RefCell<BTreeMap<String, String>>,
    /// Payment methods a browser made with Stripe.js, attached or not.
    pub payment_methods: RefCell<Vec<StripePaymentMethod>>,
    /// Each customer's `invoice_settings.default_payment_method`.
    pub default_payment_methods: RefCell<BTreeMap<String, String>>,
    /// The first answer to each Idempotency-Key of a `cancel_at_period_end` change.
    period_end_replies: RefCell<BTreeMap<String, StripeSubscription>>,
    /// Create the customer, then lose the answer, this many times.
    pub fail_after_create: Cell<u32>,
    pub down: Cell<bool>,
    /// New subscriptions' first payment waits for 3-D Secure (status `incomplete`).
    pub card_needs_3ds: Cell<bool>,
    /// Tax ids: (Stripe customer, tax id).
    pub tax_ids: RefCell<Vec<(String, TaxId)>>,
    /// Invoices; paying an open one succeeds unless `card_declines` (or `card_needs_3ds`).
    pub invoices: RefCell<Vec<StripeInvoice>>,
    pub card_declines: Cell<bool>,
    /// Promotion codes redeemed: (Stripe subscription, promotion code id).
    pub redeemed: RefCell<Vec<(String, String)>>,
    /// Each customer's address.
    pub addresses: RefCell<BTreeMap<String, BillingAddress>>,
    pub checkout_sessions: RefCell<Vec<FakeCheckout>>,
    counter: Cell<u32>,
}

/// A Checkout session as the fake keeps it: what the page would subscribe to, and whether it is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCheckout {
    pub id: String,
    pub customer: String,
    pub price: String,
    pub quantity: u32,
    pub promotion: Option<String>,
    pub trial_days: Option<u32>,
    pub success_url: String,
    /// Our id for the subscription the page will make (its metadata).
    pub local_id: String,
    pub open: bool,
    /// The Stripe subscription the paid page made.
    pub subscription: Option<String>,
}

impl FakeStripe {
    fn next_id(&self, prefix: &str) -> String {
        self.counter.set(self.counter.get() + 1);
        format!("{prefix}_{}", self.counter.get())
    }

    fn check_up(&self) -> Result<(), StripeError> {
        if self.down.get() { Err(StripeError::Unavailable("down".into())) } else { Ok(()) }
    }

    /// A card made in a browser with Stripe.js (not yet attached to anyone).
    pub fn add_card(&self, id: &str, last4: &str) {
        self.payment_methods.borrow_mut().push(StripePaymentMethod {
            summary: PaymentMethodSummary {
                id: id.into(),
                kind: "card".into(),
                card: Some(CardSummary { brand: "visa".into(), last4: last4.into(), exp_month: 12, exp_year: 2031 }),
            },
            customer: None,
        });
    }

    /// What Stripe's page does when the user pays: the subscription made from the session.
    pub fn complete_checkout(&self, id: &str) -> String {
        let session = self.checkout_sessions.borrow().iter().find(|c| c.id == id).cloned().expect("a session the test made");
        let order = SubscriptionOrder { price: PriceId::parse(&session.price).expect("a valid price"), quantity: Quantity::parse(i64::from(session.quantity)).expect("a valid quantity"), promotion_code: None };
        let new = NewSubscription { customer: &session.customer, order: &order, promotion: session.promotion.as_deref(), trial_days: session.trial_days, user_id: "", local_id: &session.local_id };
        let made = self.create_subscription(&new, "checkout").expect("the fake Stripe is up").id;
        if let Some(stored) = self.checkout_sessions.borrow_mut().iter_mut().find(|c| c.id == id) {
            (stored.open, stored.subscription) = (false, Some(made.clone()));
        }
        made
    }

    pub fn set_status(&self, id: &str, status: SubscriptionStatus) {
        if let Some(s) = self.subscriptions.borrow_mut().iter_mut().find(|s| s.id == id) {
            s.status = status;
        }
    }
}

impl Billing for FakeStripe {
    fn create_customer(&self, c: &NewStripeCustomer<'_>, key: &str) -> Result<StripeCustomerRef, StripeError> {
        self.check_up()?;
        if let Some(id) = self.keys.borrow().get(key) {
            return Ok(self.customers.borrow().iter().find(|x| &x.id == id).cloned().expect("the fake store holds the customer it just matched"));
        }
        let created = StripeCustomerRef { id: self.next_id("cus"), user_id: Some(c.user_id.into()), created: 1 };
        self.customers.borrow_mut().push(created.clone());
        self.emails.borrow_mut().insert(created.id.clone(), c.email.into());
        self.keys.borrow_mut().insert(key.into(), created.id.clone());
        if self.fail_after_create.get() > 0 {
            self.fail_after_create.set(self.fail_after_create.get() - 1);
            return Err(StripeError::Unavailable("answer lost".into()));
        }
        Ok(created)
    }
    fn customers_by_email(&self, email: &str) -> Result<Vec<StripeCustomerRef>, StripeError> {
        self.check_up()?;
        let emails = self.emails.borrow();
        Ok(self.customers.borrow().iter().filter(|c| emails.get(&c.id).map(String::as_str) == Some(email)).cloned().collect())
    }
    fn customer_exists(&self, id: &str) -> Result<bool, StripeError> {
        self.check_up()?;
        Ok(self.customers.borrow().iter().any(|c| c.id == id))
    }
    fn delete_customer(&self, id: &str) -> Result<(), StripeError> {
        self.check_up()?;
        self.customers.borrow_mut().retain(|c| c.id != id);
        Ok(())
    }
    fn update_customer_profile(&self, id: &str, profile: &Profile, _key: &str) -> Result<(), StripeError> {
        self.check_up()?;
        if !self.customers.borrow().iter().any(|c| c.id == id) {
            return Err(StripeError::InvalidRequest { message: "No such customer".into(), param: None, code: Some("resource_missing".into()), status: 404 });
        }
        self.emails.borrow_mut().insert(id.into(), profile.email.clone());
        self.profile_updates.borrow_mut().push((id.into(), profile.name.clone(), profile.email.clone()));
        Ok(())
    }
    fn profile_digest(&self, profile: &Profile) -> String {
        billing::profile_digest(b"sk_test_fake", profile)
    }
    fn create_subscription(&self, new: &NewSubscription<'_>, _key: &str) -> Result<StripeSubscription, StripeError> {
        let NewSubscription { customer, order, promotion, trial_days, local_id, .. } = *new;
        self.check_up()?;
        let id = self.next_id("sub");
        // A trial charges nothing: no first payment to authenticate.
        let pending_payment = (self.card_needs_3ds.get() && trial_days.is_none()).then(|| PendingPayment {
            status: "requires_action".into(),
            client_secret: format!("pi_for_{id}_secret_fake"),
        });
        let sub = StripeSubscription {
            id,
            customer: customer.into(),
            status: match (trial_days, &pending_payment) {
                (Some(_), _) => SubscriptionStatus::Trialing,
                (None, Some(_)) => SubscriptionStatus::Incomplete,
                (None, None) => SubscriptionStatus::Active,
            },
            price_id: Some(order.price.as_str().into()),
            quantity: Some(order.quantity.get()),
            current_period_end: Some(trial_days.map_or(5000, |days| 1000 + i64::from(days) * 86_400)),
            cancel_at_period_end: false,
            created: 1000,
            local_id: Some(local_id.into()),
            pending_payment,
            item_id: Some(self.next_id("si")),
        };
        self.subscriptions.borrow_mut().push(sub.clone());
        if let Some(promotion) = promotion {
            self.redeemed.borrow_mut().push((sub.id.clone(), promotion.to_string()));
        }
        Ok(sub)
    }
    /// `LAUNCH20` is the one active code (`promo_launch20`).
    fn promotion_code_id(&self, code: &str) -> Result<Option<String>, StripeError> {
        self.check_up()?;
        Ok((code == "LAUNCH20").then(|| "promo_launch20".to_string()))
    }
    fn subscription(&self, id: &str) -> Result<Option<StripeSubscription>, StripeError> {
        self.check_up()?;
        Ok(self.subscriptions.borrow().iter().find(|s| s.id == id).cloned())
    }
    fn subscription_with_payment(&self, id: &str) -> Result<Option<StripeSubscription>, StripeError> {
        self.subscription(id)
    }
    fn subscriptions_of(&self, customer: &str) -> Result<Vec<StripeSubscription>, StripeError> {
        self.check_up()?;
        Ok(self.subscriptions.borrow().iter().filter(|s| s.customer == customer).cloned().collect())
    }
    fn set_cancel_at_period_end(&self, id: &str, cancel: bool, key: &str) -> Result<StripeSubscription, StripeError> {
        self.check_up()?;
        // As Stripe does: a key seen before replays its first answer and changes nothing.
        if let Some(first) = self.period_end_replies.borrow().get(key) {
            return Ok(first.clone());
        }
        let mut subs = self.subscriptions.borrow_mut();
        let s = subs.iter_mut().find(|s| s.id == id).ok_or_else(|| not_found("id"))?;
        s.cancel_at_period_end = cancel;
        self.period_end_replies.borrow_mut().insert(key.into(), s.clone());
        Ok(s.clone())
    }
    fn change_item(&self, id: &str, change: ItemChange<'_>, _key: &str) -> Result<StripeSubscription, StripeError> {
        self.check_up()?;
        if change.price.as_str().contains("unknown") {
            return Err(StripeError::InvalidRequest { message: "No such price".into(), param: Some("items[0][price]".into()), code: Some("resource_missing".into()), status: 400 });
        }
        let mut subs = self.subscriptions.borrow_mut();
        let s = subs.iter_mut().find(|s| s.id == id && s.item_id.as_deref() == Some(change.item_id)).ok_or_else(|| not_found("items[0][id]"))?;
        s.price_id = Some(change.price.as_str().into());
        s.quantity = Some(change.quantity);
        Ok(s.clone())
    }
    fn cancel_now(&self, id: &str) -> Result<StripeSubscription, StripeError> {
        self.check_up()?;
        let mut subs = self.subscriptions.borrow_mut();
        let s = subs.iter_mut().find(|s| s.id == id).ok_or_else(|| not_found("id"))?;
        s.status = SubscriptionStatus::Canceled;
        Ok(s.clone())
    }
    fn invoices(&self, _customer: &str, _limit: u32, _starting_after: Option<&str>) -> Result<InvoicePage, StripeError> {
        self.check_up()?;
        Ok(InvoicePage { invoices: Vec::new(), has_more: false })
    }
    /// Every unit of every price costs 1000 a period; a change credits 400 a unit of the old item
    /// and charges 600 a unit of the new one. A subscription set to end has nothing to invoice.
    fn preview_invoice(&self, customer: &str, subscription: &str, change: Option<(ItemChange<'_>, i64)>, _key: &str)
    -> Result<Option<InvoicePreview>, StripeError> {
        self.check_up()?;
        let subs = self.subscriptions.borrow();
        let s = subs.iter().find(|s| s.id == subscription && s.customer == customer).ok_or_else(|| not_found("subscription"))?;
        if s.cancel_at_period_end || !s.status.is_live() {
            return Ok(None);
        }
        let line = |price: Option<&str>, amount: i64, proration: bool| InvoiceLine {
            description: None,
            amount,
            currency: "eur".into(),
            price_id: price.map(str::to_string),
            proration,
            period_start: None,
            period_end: None,
        };
        let mut lines = Vec::new();
        let units = i64::from(s.quantity.unwrap_or(1));
        if let Some((change, _)) = change {
            if change.price.as_str().contains("unknown") {
                return Err(StripeError::InvalidRequest { message: "No such price".into(), param: Some("subscription_details[items][0][price]".into()), code: Some("resource_missing".into()), status: 400 });
            }
            lines.push(line(s.price_id.as_deref(), -400 * units, true));
            lines.push(line(Some(change.price.as_str()), 600 * i64::from(change.quantity), true));
        }
        let (renewing, units) = change.map_or((s.price_id.as_deref(), units), |(c, _)| (Some(c.price.as_str()), i64::from(c.quantity)));
        lines.push(line(renewing, 1000 * units, false));
        let total = lines.iter().map(|l| l.amount).sum();
        Ok(Some(InvoicePreview { amount_due: total, subtotal: total, total, currency: "eur".into(), next_payment_attempt: s.current_period_end, lines }))
    }
    fn create_setup_intent(&self, _customer: &str, _user_id: &str, _key: &str) -> Result<SetupIntent, StripeError> {
        self.check_up()?;
        let id = self.next_id("seti");
        Ok(SetupIntent { client_secret: format!("{id}_secret_fake"), id, status: "requires_payment_method".into() })
    }
    fn payment_method(&self, id: &str) -> Result<Option<StripePaymentMethod>, StripeError> {
        self.check_up()?;
        Ok(self.payment_methods.borrow().iter().find(|pm| pm.summary.id == id).cloned())
    }
    fn attach_payment_method(&self, id: &str, customer: &str, _key: &str) -> Result<StripePaymentMethod, StripeError> {
        self.check_up()?;
        let mut methods = self.payment_methods.borrow_mut();
        let pm = methods.iter_mut().find(|pm| pm.summary.id == id).ok_or_else(|| not_found("payment_method"))?;
        if pm.summary.id.contains("declined") {
            return Err(StripeError::Card { message: "Your card was declined.".into(), code: Some("card_declined".into()) });
        }
        pm.customer = Some(customer.to_string());
        Ok(pm.clone())
    }
    fn set_default_payment_method(&self, customer: &str, payment_method: &str, _key: &str) -> Result<(), StripeError> {
        self.check_up()?;
        let attached = self.payment_methods.borrow().iter().any(|pm| pm.summary.id == payment_method && pm.customer.as_deref() == Some(customer));
        if !attached {
            return Err(StripeError::InvalidRequest { message: "not attached".into(), param: Some("invoice_settings[default_payment_method]".into()), code: None, status: 400 });
        }
        self.default_payment_methods.borrow_mut().insert(customer.to_string(), payment_method.to_string());
        Ok(())
    }
    fn default_payment_method(&self, customer: &str) -> Result<Option<String>, StripeError> {
        self.check_up()?;
        Ok(self.default_payment_methods.borrow().get(customer).cloned())
    }
    fn clear_default_payment_method(&self, customer: &str, _key: &str) -> Result<(), StripeError> {
        self.check_up()?;
        self.default_payment_methods.borrow_mut().remove(customer);
        Ok(())
    }
    fn create_checkout_session(&self, new: &NewSubscription<'_>, urls: CheckoutUrls<'_>, _key: &str) -> Result<CheckoutSession, StripeError> {
        self.check_up()?;
        let id = self.next_id("cs_test");
        self.checkout_sessions.borrow_mut().push(FakeCheckout {
            id: id.clone(),
            customer: new.customer.into(),
            price: new.order.price.as_str().into(),
            quantity: new.order.quantity.get(),
            promotion: new.promotion.map(str::to_string),
            trial_days: new.trial_days,
            success_url: urls.success.into(),
            local_id: new.local_id.into(),
            open: true,
            subscription: None,
        });
        Ok(CheckoutSession { url: format!("https://checkout.stripe.test/c/pay/{id}"), id, expires_at: 90_000 })
    }
    fn checkout_session(&self, id: &str) -> Result<Option<CheckoutState>, StripeError> {
        self.check_up()?;
        Ok(self.checkout_sessions.borrow().iter().find(|c| c.id == id).map(|c| CheckoutState {
            id: c.id.clone(),
            customer: Some(c.customer.clone()),
            status: if c.subscription.is_some() { "complete" } else if c.open { "open" } else { "expired" }.into(),
            payment_status: Some(if c.subscription.is_some() { "paid" } else { "unpaid" }.into()),
            subscription: c.subscription.clone(),
            expires_at: Some(90_000),
        }))
    }
    fn open_checkout_sessions(&self, customer: &str) -> Result<Vec<String>, StripeError> {
        self.check_up()?;
        Ok(self.checkout_sessions.borrow().iter().filter(|c| c.open && c.customer == customer).map(|c| c.id.clone()).collect())
    }
    fn expire_checkout_session(&self, id: &str) -> Result<(), StripeError> {
        self.check_up()?;
        match self.checkout_sessions.borrow_mut().iter_mut().find(|c| c.id == id && c.open) {
            Some(session) => {
                session.open = false;
                Ok(())
            }
            None => Err(StripeError::InvalidRequest { message: "not open".into(), param: None, code: None, status: 400 }),
        }
    }
    fn create_portal_session(&self, customer: &str, return_url: Option<&str>, _key: &str) -> Result<String, StripeError> {
        self.check_up()?;
        let Some(return_url) = return_url else {
            return Err(StripeError::InvalidRequest { message: "no return_url".into(), param: Some("return_url".into()), code: None, status: 400 });
        };
        Ok(format!("https://billing.stripe.test/p/session/{customer}?return={return_url}"))
    }
    fn invoice(&self, id: &str) -> Result<Option<StripeInvoice>, StripeError> {
        self.check_up()?;
        Ok(self.invoices.borrow().iter().find(|i| i.invoice.id == id).cloned())
    }
    fn pay_invoice(&self, id: &str, _key: &str) -> Result<StripeInvoice, StripeError> {
        self.check_up()?;
        if self.card_declines.get() {
            return Err(StripeError::Card { message: "Your card was declined.".into(), code: Some("card_declined".into()) });
        }
        if self.card_needs_3ds.get() {
            return Err(StripeError::Card { message: "This payment requires additional user action.".into(), code: Some("invoice_payment_intent_requires_action".into()) });
        }
        let mut invoices = self.invoices.borrow_mut();
        let found = invoices.iter_mut().find(|i| i.invoice.id == id).ok_or_else(|| not_found("invoice"))?;
        found.invoice.status = Some("paid".into());
        found.invoice.amount_paid = found.invoice.amount_due;
        // As Stripe does: a subscription whose first or overdue invoice is paid becomes active.
        if let Some(sub) = &found.subscription
            && let Some(remote) = self.subscriptions.borrow_mut().iter_mut().find(|s| &s.id == sub) {
                remote.status = SubscriptionStatus::Active;
            }
        Ok(found.clone())
    }
    fn billing_address(&self, customer: &str) -> Result<Option<BillingAddress>, StripeError> {
        self.check_up()?;
        Ok(self.addresses.borrow().get(customer).cloned())
    }
    /// A postal code `00000` is one Stripe refuses for the country.
    fn set_billing_address(&self, customer: &str, address: &BillingAddress, _key: &str) -> Result<(), StripeError> {
        self.check_up()?;
        if address.postal_code.as_deref() == Some("00000") {
            return Err(StripeError::InvalidRequest { message: "Invalid postal code.".into(), param: Some("address[postal_code]".into()), code: None, status: 400 });
        }
        self.addresses.borrow_mut().insert(customer.into(), address.clone());
        Ok(())
    }
    fn tax_ids(&self, customer: &str) -> Result<Vec<TaxId>, StripeError> {
        self.check_up()?;
        Ok(self.tax_ids.borrow().iter().filter(|(owner, _)| owner == customer).map(|(_, t)| t.clone()).collect())
    }
    /// A value with `000` in it is one Stripe finds invalid for its type.
    fn add_tax_id(&self, customer: &str, tax_id: &NewTaxId, _key: &str) -> Result<TaxId, StripeError> {
        self.check_up()?;
        if tax_id.value().contains("000") {
            return Err(StripeError::InvalidRequest { message: "Invalid value for eu_vat.".into(), param: Some("value".into()), code: Some("tax_id_invalid".into()), status: 400 });
        }
        let added = TaxId {
            id: self.next_id("txi"),
            kind: tax_id.kind().into(),
            value: tax_id.value().into(),
            country: tax_id.value().get(..2).map(str::to_ascii_uppercase),
            verification_status: Some("pending".into()),
        };
        self.tax_ids.borrow_mut().push((customer.into(), added.clone()));
        Ok(added)
    }
    fn delete_tax_id(&self, customer: &str, id: &str) -> Result<bool, StripeError> {
        self.check_up()?;
        let mut all = self.tax_ids.borrow_mut();
        let before = all.len();
        all.retain(|(owner, t)| !(owner == customer && t.id == id));
        Ok(all.len() < before)
    }
    fn detach_payment_method(&self, id: &str, _key: &str) -> Result<(), StripeError> {
        self.check_up()?;
        let mut methods = self.payment_methods.borrow_mut();
        let pm = methods.iter_mut().find(|pm| pm.summary.id == id).ok_or_else(|| not_found("payment_method"))?;
        let Some(owner) = pm.customer.take() else {
            // As Stripe answers a detach of a payment method attached to no one.
            return Err(StripeError::InvalidRequest { message: "not attached".into(), param: None, code: None, status: 400 });
        };
        // As Stripe does, the owner's default goes with the card.
        let mut defaults = self.default_payment_methods.borrow_mut();
        if defaults.get(&owner).map(String::as_str) == Some(id) {
            defaults.remove(&owner);
        }
        Ok(())
    }
}

fn not_found(param: &str) -> StripeError {
    StripeError::InvalidRequest { message: "No such object".into(), param: Some(param.into()), code: Some("resource_missing".into()), status: 404 }
}

pub struct FakeProfiles {
    state: AuthState,
    /// The domain of every user's email: changing it is every user changing their email at auth.
    pub email_domain: RefCell<String>,
    /// Where the answers say they came from.
    pub source: Cell<ProfileSource>,
    /// Answers this many lookups, then every user is gone (an erasure at auth in between).
    pub lookups_before_gone: Cell<Option<u32>>,
    /// What auth says of every user's email.
    pub email_verified: Cell<bool>,
}

enum AuthState {
    Up,
    Down,
    /// Up, but every user has been deleted.
    UsersGone,
}

impl FakeProfiles {
    fn with(state: AuthState) -> Self {
        Self {
            state,
            email_domain: RefCell::new("example.org".into()),
            source: Cell::new(ProfileSource::Auth),
            lookups_before_gone: Cell::new(None),
            email_verified: Cell::new(false),
        }
    }
    pub fn up() -> Self {
        Self::with(AuthState::Up)
    }
    pub fn down() -> Self {
        Self::with(AuthState::Down)
    }
    pub fn users_gone() -> Self {
        Self::with(AuthState::UsersGone)
    }
}

impl Profiles for FakeProfiles {
    fn current_profile(&self, id: &str) -> Result<ProfileLookup, ProfileError> {
        self.profile(id)
    }
    fn profile(&self, id: &str) -> Result<ProfileLookup, ProfileError> {
        match self.state {
            AuthState::Up => {}
            AuthState::Down => return Err(ProfileError::Unavailable { reason: "down".into(), retry_after: 5 }),
            AuthState::UsersGone => return Err(ProfileError::NotFound),
        }
        match self.lookups_before_gone.get() {
            Some(0) => return Err(ProfileError::NotFound),
            Some(left) => self.lookups_before_gone.set(Some(left - 1)),
            None => {}
        }
        Ok(ProfileLookup {
            profile: Profile {
                id: id.into(),
                name: format!("Name {id}"),
                email: format!("{id}@{}", self.email_domain.borrow()),
                email_verified: self.email_verified.get(),
            },
            source: self.source.get(),
        })
    }
}
