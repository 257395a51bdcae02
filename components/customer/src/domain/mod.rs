//! Billing rules. No spin_sdk here: the rules take the ports below (implemented by `store::mysql`,
//! `stripe` and `auth_client`) and plain values, and are unit-tested natively with fakes.

pub mod billing;
pub mod idempotency;
pub mod model;
pub mod webhook;

#[cfg(test)]
pub(crate) mod fake;

use crate::error::{Error, conflict_for_constraint};
use crate::problem::FieldError;
pub use model::*;

/// A database failure as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A unique key fired (MySQL error 1062); `constraint` is the key's name.
    #[error("duplicate key {constraint}")]
    Duplicate { constraint: String },
    /// The database could not be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Duplicate { constraint } => conflict_for_constraint(&constraint),
            StoreError::Unavailable(cause) => {
                telemetry::error("database unavailable", &[("cause", cause.as_str().into())]);
                Error::DatabaseUnavailable
            }
            StoreError::Other(cause) => Error::Internal(format!("store: {cause}")),
        }
    }
}

/// Result of trying to take the right to create a user's Stripe customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request holds the lease. `resumed`: an earlier attempt existed (crash or failure).
    /// `started`: when this provisioning began (the first attempt, Unix milliseconds); with `attempt` it makes
    /// the Stripe Idempotency-Key, so a user who left billing and comes back gets a new key.
    Claimed { attempt: u32, resumed: bool, last_error: Option<String>, started: i64 },
    /// Another request holds it.
    Busy,
}

/// The name and email Stripe was last sent for a customer: their digest
/// (`Billing::profile_digest`) and when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentProfile {
    pub digest: String,
    pub sent_at: i64,
}

/// A stored first response of an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemRecord {
    pub request_hash: String,
    pub done: bool,
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub created_at: i64,
}

/// The customer database. One connection per request; `begin`/`commit`/`rollback` wrap the
/// statements in between in one transaction. `lock_*` take row locks (`FOR UPDATE`) and are
/// meant to be called inside a transaction.
pub trait Store {
    fn begin(&self) -> Result<(), StoreError>;
    fn commit(&self) -> Result<(), StoreError>;
    fn rollback(&self);

    fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError>;
    /// Customers in id order, after the `after` id (a cursor), at most `limit`.
    fn customers(&self, after: Option<&str>, limit: u32) -> Result<Vec<Customer>, StoreError>;
    /// Locks the customer's row; serialises every change to its subscriptions.
    fn lock_customer(&self, id: &str) -> Result<bool, StoreError>;
    /// Locks the row of the customer with this Stripe customer id; returns its id.
    fn lock_customer_by_stripe_id(&self, stripe_customer_id: &str) -> Result<Option<String>, StoreError>;
    fn insert_customer(&self, id: &str, stripe_customer_id: &str, areas: &AreaIds) -> Result<(), StoreError>;
    fn replace_areas(&self, id: &str, areas: &AreaIds) -> Result<(), StoreError>;
    fn delete_customer(&self, id: &str) -> Result<(), StoreError>;

    fn claim_provisioning(&self, id: &str, now: i64, lease_secs: i64) -> Result<Claim, StoreError>;
    /// Gives the lease back after a failure; `next_attempt` moves the Stripe key on.
    fn provisioning_failed(&self, id: &str, error: &str, next_attempt: bool) -> Result<(), StoreError>;
    fn delete_provisioning(&self, id: &str) -> Result<(), StoreError>;

    fn subscriptions(&self, customer_id: &str) -> Result<Vec<Subscription>, StoreError>;
    /// The subscriptions of several customers (a page of a list), in one query.
    fn subscriptions_of_customers(&self, customer_ids: &[&str]) -> Result<Vec<Subscription>, StoreError>;
    fn subscription(&self, customer_id: &str, id: &str) -> Result<Option<Subscription>, StoreError>;
    fn subscription_by_stripe_id(&self, stripe_subscription_id: &str) -> Result<Option<Subscription>, StoreError>;
    fn subscription_by_id(&self, id: &str) -> Result<Option<Subscription>, StoreError>;
    fn insert_subscription(&self, subscription: &Subscription) -> Result<(), StoreError>;
    fn update_subscription(&self, subscription: &Subscription) -> Result<(), StoreError>;

    /// The webhook inbox: `Duplicate` when the event id is already recorded.
    fn insert_event(&self, id: &str, kind: &str, created: i64, object_id: Option<&str>) -> Result<(), StoreError>;
    fn set_event_outcome(&self, id: &str, outcome: &str) -> Result<(), StoreError>;

    /// What Stripe was last sent of this customer's name and email, and when.
    fn stripe_profile(&self, customer_id: &str) -> Result<Option<SentProfile>, StoreError>;
    fn set_stripe_profile_digest(&self, customer_id: &str, digest: &str, now: i64) -> Result<(), StoreError>;

    /// Counts one call of `user` in the minute starting at `window_start`; returns the count so
    /// far, this call included.
    fn count_user_call(&self, user_id: &str, window_start: i64) -> Result<u64, StoreError>;

    /// Whether the user was ever given a free trial (kept when the customer leaves billing).
    fn trial_granted(&self, user_id: &str) -> Result<bool, StoreError>;
    fn record_trial(&self, user_id: &str, now: i64, days: u32) -> Result<(), StoreError>;
    /// Forgets the user's trial: only when the account itself is erased.
    fn forget_trial(&self, user_id: &str) -> Result<(), StoreError>;

    fn audit(&self, now: i64, actor: &str, action: &str, subject: Option<&str>, detail: &str) -> Result<(), StoreError>;

    fn idem_insert(&self, principal: &str, key: &str, request_hash: &str, now: i64) -> Result<(), StoreError>;
    fn idem_get(&self, principal: &str, key: &str) -> Result<Option<IdemRecord>, StoreError>;
    fn idem_complete(&self, principal: &str, key: &str, status: u16, content_type: &str, body: &str)
    -> Result<(), StoreError>;
    fn idem_delete(&self, principal: &str, key: &str) -> Result<(), StoreError>;
}

/// A Stripe failure as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// 402 card_error.
    #[error("card error: {message}")]
    Card { message: String, code: Option<String> },
    /// 400/404 invalid_request_error; `param` and `code` as Stripe names them
    /// (`items[0][price]`, `resource_missing`).
    #[error("invalid request: {message}")]
    InvalidRequest { message: String, param: Option<String>, code: Option<String>, status: u16 },
    /// 401/403: our key is wrong. Logged, answered as an opaque 500.
    #[error("stripe refused our credentials ({0})")]
    Authentication(u16),
    /// Reusing an Idempotency-Key with other parameters: a bug on our side.
    #[error("idempotency error: {0}")]
    Idempotency(String),
    /// 429/5xx/timeouts after the retries.
    #[error("stripe unavailable: {0}")]
    Unavailable(String),
    /// Stripe answered something we cannot read.
    #[error("unexpected answer from stripe: {0}")]
    Malformed(String),
}

impl StripeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::InvalidRequest { status: 404, .. })
    }

    /// The outcome at Stripe is unknown: it may or may not have acted.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Malformed(_))
    }
}

impl From<StripeError> for Error {
    fn from(err: StripeError) -> Self {
        match err {
            StripeError::Card { message, code } => Error::PaymentRequired { detail: message, decline_code: code },
            StripeError::InvalidRequest { message, param, code, .. } => {
                let field = param.as_deref().and_then(request_field).map(|field| {
                    let code = if code.as_deref() == Some("resource_missing") { "not_found" } else { "rejected" };
                    FieldError::new(field, code, message.clone())
                });
                Error::StripeRejected { detail: message, errors: field.into_iter().collect() }
            }
            StripeError::Unavailable(cause) => {
                telemetry::warn("stripe unavailable", &[("cause", cause.as_str().into())]);
                Error::StripeUnavailable { retry_after: 5 }
            }
            other => Error::Internal(format!("stripe: {other}")),
        }
    }
}

/// The field of our own request that a Stripe `param` came from. Only the price, the quantity,
/// a tax id's type and value and the invoice list's cursor are a client's values that reach Stripe; any other param (`customer`,
/// `metadata[...]`) is ours, and naming it in `errors` would tell a client to fix a field it
/// never sent.
fn request_field(stripe_param: &str) -> Option<&'static str> {
    if let Some(field) = ["starting_after", "type", "value"].into_iter().find(|field| *field == stripe_param) {
        return Some(field);
    }
    if stripe_param == "discounts[0][promotion_code]" || stripe_param == "promotion_code" {
        return Some("promotion_code");
    }
    // An address field: `address[postal_code]` is the client's `postal_code`.
    if let Some(field) = stripe_param.strip_prefix("address[").and_then(|rest| rest.strip_suffix(']')) {
        return ["line1", "line2", "city", "postal_code", "state", "country"].into_iter().find(|known| *known == field);
    }
    // An invoice preview names a subscription's items under `subscription_details`, a
    // Checkout session its own under `line_items`.
    let item = stripe_param
        .strip_prefix("items[")
        .or_else(|| stripe_param.strip_prefix("subscription_details[items]["))
        .or_else(|| stripe_param.strip_prefix("line_items["));
    let field = match item.and_then(|rest| rest.split_once("][")) {
        Some((index, field)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => field.strip_suffix(']')?,
        Some(_) => return None,
        None => stripe_param,
    };
    match field {
        "price" | "plan" => Some("price_id"),
        "quantity" => Some("quantity"),
        _ => None,
    }
}

/// What Stripe needs to create a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStripeCustomer<'a> {
    pub user_id: &'a str,
    pub name: &'a str,
    pub email: &'a str,
}

/// What Stripe needs to create a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewSubscription<'a> {
    /// The Stripe customer.
    pub customer: &'a str,
    pub order: &'a SubscriptionOrder,
    /// The id (`promo_...`) of the promotion code the order names, once looked up.
    pub promotion: Option<&'a str>,
    pub trial_days: Option<u32>,
    /// Ours, for Stripe's metadata.
    pub user_id: &'a str,
    pub local_id: &'a str,
}

/// The Stripe API as the rules use it.
pub trait Billing {
    fn create_customer(&self, customer: &NewStripeCustomer<'_>, idempotency_key: &str)
    -> Result<StripeCustomerRef, StripeError>;
    fn customers_by_email(&self, email: &str) -> Result<Vec<StripeCustomerRef>, StripeError>;
    /// False when Stripe says the customer is deleted or unknown.
    fn customer_exists(&self, id: &str) -> Result<bool, StripeError>;
    /// Deleting a customer that is already gone is success.
    fn delete_customer(&self, id: &str) -> Result<(), StripeError>;
    /// Sets the customer's name and email: what Stripe prints on invoices and mails receipts to.
    fn update_customer_profile(&self, id: &str, profile: &Profile, idempotency_key: &str) -> Result<(), StripeError>;
    /// A digest of the name and email, keyed with this account's secret key (HMAC-SHA-256, hex):
    /// it tells whether Stripe already holds a profile, and nothing to whoever reads our database.
    fn profile_digest(&self, profile: &Profile) -> String;
    /// The id (`promo_...`) of the active promotion code `code`, if Stripe has one.
    fn promotion_code_id(&self, code: &str) -> Result<Option<String>, StripeError>;
    /// `promotion`: a promotion code's id, whose coupon discounts the subscription's invoices.
    /// With `trial_days`, Stripe starts it `trialing` and charges nothing until the trial ends;
    /// then it charges the default payment method, or cancels the subscription if there is none.
    fn create_subscription(&self, new: &NewSubscription<'_>, idempotency_key: &str) -> Result<StripeSubscription, StripeError>;
    fn subscription(&self, id: &str) -> Result<Option<StripeSubscription>, StripeError>;
    /// As [`Billing::subscription`], with the latest invoice's PaymentIntent expanded, so that a
    /// payment waiting for the user is read along (only reads that show it need the larger answer).
    fn subscription_with_payment(&self, id: &str) -> Result<Option<StripeSubscription>, StripeError>;
    /// Every subscription of the customer, whatever its status.
    fn subscriptions_of(&self, customer: &str) -> Result<Vec<StripeSubscription>, StripeError>;
    /// Schedules the cancellation at the end of the current period (`true`), or withdraws it.
    fn set_cancel_at_period_end(&self, id: &str, cancel: bool, idempotency_key: &str)
    -> Result<StripeSubscription, StripeError>;
    fn cancel_now(&self, id: &str) -> Result<StripeSubscription, StripeError>;
    /// Sets the price and quantity of the subscription's item (Stripe prorates by default).
    fn change_item(&self, id: &str, change: ItemChange<'_>, idempotency_key: &str) -> Result<StripeSubscription, StripeError>;
    fn invoices(&self, customer: &str, limit: u32, starting_after: Option<&str>) -> Result<InvoicePage, StripeError>;
    /// One invoice, its PaymentIntent expanded; None when Stripe knows no such invoice.
    fn invoice(&self, id: &str) -> Result<Option<StripeInvoice>, StripeError>;
    /// Charges an open invoice now with the customer's default payment method (`/pay`).
    fn pay_invoice(&self, id: &str, idempotency_key: &str) -> Result<StripeInvoice, StripeError>;
    /// The invoice Stripe would make next for `subscription` of `customer` (`create_preview`);
    /// with `change`, as if its item were changed at `proration_date`, its prorations included.
    /// None when Stripe says nothing will be invoiced (the subscription ends first).
    fn preview_invoice(&self, customer: &str, subscription: &str, change: Option<(ItemChange<'_>, i64)>, idempotency_key: &str)
    -> Result<Option<InvoicePreview>, StripeError>;
    /// A SetupIntent for the customer (`usage=off_session`: for renewals without the user).
    fn create_setup_intent(&self, customer: &str, user_id: &str, idempotency_key: &str) -> Result<SetupIntent, StripeError>;
    /// None when Stripe knows no such payment method.
    fn payment_method(&self, id: &str) -> Result<Option<StripePaymentMethod>, StripeError>;
    fn attach_payment_method(&self, id: &str, customer: &str, idempotency_key: &str) -> Result<StripePaymentMethod, StripeError>;
    /// Makes an attached payment method the one invoices (and so subscriptions) charge.
    fn set_default_payment_method(&self, customer: &str, payment_method: &str, idempotency_key: &str) -> Result<(), StripeError>;
    /// The id of the customer's default payment method for invoices, if any.
    fn default_payment_method(&self, customer: &str) -> Result<Option<String>, StripeError>;
    /// Leaves the customer with no default payment method for invoices.
    fn clear_default_payment_method(&self, customer: &str, idempotency_key: &str) -> Result<(), StripeError>;
    /// Detaches a payment method from its customer: Stripe can never charge it again.
    fn detach_payment_method(&self, id: &str, idempotency_key: &str) -> Result<(), StripeError>;
    /// A customer-portal session: the URL of Stripe's hosted page where the customer manages
    /// cards, subscriptions and invoices, back to `return_url` (else the portal's default).
    fn create_portal_session(&self, customer: &str, return_url: Option<&str>, idempotency_key: &str) -> Result<String, StripeError>;
    /// A Checkout session in subscription mode for `new` (its price, quantity, promotion, trial
    /// and our metadata go to the subscription the page makes).
    fn create_checkout_session(&self, new: &NewSubscription<'_>, urls: CheckoutUrls<'_>, idempotency_key: &str)
    -> Result<CheckoutSession, StripeError>;
    /// A Checkout session; None when Stripe knows no such session.
    fn checkout_session(&self, id: &str) -> Result<Option<CheckoutState>, StripeError>;
    /// The ids of the customer's Checkout sessions still open (at most 100).
    fn open_checkout_sessions(&self, customer: &str) -> Result<Vec<String>, StripeError>;
    /// Closes an open session: its page can no longer be paid. One no longer open is an
    /// `InvalidRequest`.
    fn expire_checkout_session(&self, id: &str) -> Result<(), StripeError>;
    /// The address Stripe holds for the customer, if any.
    fn billing_address(&self, customer: &str) -> Result<Option<BillingAddress>, StripeError>;
    /// Replaces it: every field is sent, an absent one as empty, which Stripe clears.
    fn set_billing_address(&self, customer: &str, address: &BillingAddress, idempotency_key: &str) -> Result<(), StripeError>;
    /// The customer's tax ids (all of them: Stripe allows far fewer than a page of 100).
    fn tax_ids(&self, customer: &str) -> Result<Vec<TaxId>, StripeError>;
    fn add_tax_id(&self, customer: &str, tax_id: &NewTaxId, idempotency_key: &str) -> Result<TaxId, StripeError>;
    /// False when the customer has no such tax id.
    fn delete_tax_id(&self, customer: &str, id: &str) -> Result<bool, StripeError>;
}

/// Why a profile could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Auth answered 404: no such user.
    #[error("no such user at auth")]
    NotFound,
    /// Auth is down, slow, refused us, answered nonsense, or the breaker is open.
    #[error("auth unavailable: {reason}")]
    Unavailable { reason: String, retry_after: u32 },
}

impl From<ProfileError> for Error {
    fn from(err: ProfileError) -> Self {
        match err {
            ProfileError::NotFound => Error::NotFound {
                code: "profile_not_found",
                detail: "Auth has no user with this id.".into(),
            },
            ProfileError::Unavailable { reason, retry_after } => {
                telemetry::warn("auth unavailable", &[("cause", reason.as_str().into())]);
                Error::AuthUnavailable { retry_after }
            }
        }
    }
}

/// Profiles from auth.
pub trait Profiles {
    /// From the cache while its copy is fresh (`profile_cache_ttl_secs`), else from auth.
    fn profile(&self, id: &str) -> Result<ProfileLookup, ProfileError>;
    /// From auth even when the cache has a fresh copy (which is then replaced); a stale copy
    /// still stands in while auth is unavailable.
    fn current_profile(&self, id: &str) -> Result<ProfileLookup, ProfileError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(param: Option<&str>, code: Option<&str>) -> Vec<FieldError> {
        let err = StripeError::InvalidRequest {
            message: "No such price: 'price_x'".into(),
            param: param.map(str::to_string),
            code: code.map(str::to_string),
            status: 400,
        };
        let problem = Error::from(err).problem();
        assert_eq!((problem.status, problem.code), (422, "billing_rejected"));
        problem.errors
    }

    #[test]
    fn a_refused_price_names_the_clients_field() {
        let errors = rejected(Some("items[0][price]"), Some("resource_missing"));
        assert_eq!(errors, [FieldError::new("price_id", "not_found", "No such price: 'price_x'")]);
        // An invoice list's cursor that names no invoice.
        assert_eq!(rejected(Some("starting_after"), Some("resource_missing")), [FieldError::new("starting_after", "not_found", "No such price: 'price_x'")]);
        // A tax id's type and value.
        assert_eq!(rejected(Some("value"), Some("tax_id_invalid")), [FieldError::new("value", "rejected", "No such price: 'price_x'")]);
        assert_eq!(rejected(Some("type"), None), [FieldError::new("type", "rejected", "No such price: 'price_x'")]);
        assert_eq!(rejected(Some("address[postal_code]"), None), [FieldError::new("postal_code", "rejected", "No such price: 'price_x'")]);
        assert_eq!(rejected(Some("discounts[0][promotion_code]"), None), [FieldError::new("promotion_code", "rejected", "No such price: 'price_x'")]);
        for param in ["items[12][plan]", "price", "plan", "subscription_details[items][0][price]", "line_items[0][price]"] {
            assert_eq!(rejected(Some(param), Some("parameter_invalid")), [FieldError::new("price_id", "rejected", "No such price: 'price_x'")], "{param}");
        }
        for param in ["items[0][quantity]", "subscription_details[items][0][quantity]", "line_items[0][quantity]"] {
            assert_eq!(rejected(Some(param), Some("parameter_invalid")), [FieldError::new("quantity", "rejected", "No such price: 'price_x'")], "{param}");
        }
    }

    #[test]
    fn stripes_own_params_are_not_the_clients_fields() {
        for param in [None, Some("customer"), Some("metadata[user_id]"), Some("items[0]"), Some("items[][price]"), Some("items[a][price]"), Some("items[0][price][x]"),
            Some("subscription_details[items][0][id]"), Some("subscription_details[proration_date]"), Some("subscription_details[items][x][price]"),
            Some("address[x]"), Some("address[line1"), Some("shipping[address][line1]"), Some("success_url"), Some("line_items[0][x]"),
            Some("subscription_data[trial_period_days]")] {
            assert_eq!(rejected(param, Some("resource_missing")), [], "{param:?}");
        }
    }
}
