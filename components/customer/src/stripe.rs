//! A typed Stripe client over outbound HTTP: form-encoded bodies with nested keys, a pinned
//! `Stripe-Version`, an `Idempotency-Key` on every POST (derived by the caller from our own ids),
//! retries with exponential backoff on 429, 5xx and timeouts only (and as `Stripe-Should-Retry`
//! says), and Stripe's errors mapped to `StripeError`. The secret key is a type that never prints.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::domain::{
    Billing, CheckoutSession, CheckoutState, CheckoutUrls, Invoice, InvoiceLine, InvoicePage, InvoicePreview, ItemChange, NewStripeCustomer, Profile, SetupIntent,
    StripeCustomerRef, StripeError, StripePaymentMethod, StripeSubscription, NewSubscription, TaxId, NewTaxId, StripeInvoice, PendingPayment, BillingAddress, billing, is_stripe_id,
};
use crate::transport::{HttpRequest, HttpResponse, Timeouts, Transport, TransportError, send_logged};

/// The API version every request pins (subscriptions carry `current_period_end`; items carry `price`).
pub const STRIPE_VERSION: &str = "2024-06-20";
/// Attempts per request (1 + retries).
pub const MAX_ATTEMPTS: u32 = 3;
pub const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    first_byte: Duration::from_secs(10),
    between_bytes: Duration::from_secs(10),
    // Stripe answers in well under a second; a 2 MiB list page that takes 20 s is a fault.
    whole_answer: Duration::from_secs(20),
};
const MAX_BODY: usize = 2 * 1024 * 1024;

/// The secret API key. `Debug` and `Display` print a redacted form; only the Authorization header
/// ever sees the value.
#[derive(Clone)]
pub struct StripeSecret(String);

impl StripeSecret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for StripeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StripeSecret(***)")
    }
}

impl fmt::Display for StripeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An `application/x-www-form-urlencoded` body with Stripe's nested keys (`items[0][price]`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn new() -> Self {
        Self::default()
    }

    /// `path` = ["items", "0", "price"] becomes `items[0][price]`.
    pub fn field(mut self, path: &[&str], value: impl Into<String>) -> Self {
        let mut key = String::new();
        for (i, part) in path.iter().enumerate() {
            if i == 0 {
                key.push_str(part);
            } else {
                key.push('[');
                key.push_str(part);
                key.push(']');
            }
        }
        self.0.push((key, value.into()));
        self
    }

    pub fn encode(&self) -> String {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            serializer.append_pair(k, v);
        }
        serializer.finish()
    }
}

pub struct StripeClient<'a> {
    base: String,
    secret: StripeSecret,
    transport: &'a dyn Transport,
    sleep: fn(Duration),
    max_attempts: u32,
    timeouts: Timeouts,
}

fn real_sleep(d: Duration) {
    std::thread::sleep(d);
}

/// Backoff before retry `n` (1-based): 250 ms, 500 ms, 1 s, ... capped at 2 s.
pub fn backoff(retry: u32) -> Duration {
    Duration::from_millis((250u64 << retry.saturating_sub(1).min(3)).min(2000))
}

fn scrub(message: &str) -> String {
    message
        .split(' ')
        .map(|word| if word.contains("sk_") || word.contains("rk_") { "[redacted]" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

fn path_segment(id: &str) -> Result<&str, StripeError> {
    if is_stripe_id(id) { Ok(id) } else { Err(StripeError::Malformed(format!("refusing id {id:?} in a Stripe path"))) }
}

impl<'a> StripeClient<'a> {
    pub fn new(base: &str, secret: StripeSecret, transport: &'a dyn Transport) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            secret,
            transport,
            sleep: real_sleep,
            max_attempts: MAX_ATTEMPTS,
            timeouts: TIMEOUTS,
        }
    }

    #[cfg(test)]
    fn for_tests(transport: &'a dyn Transport) -> Self {
        Self { sleep: |_| {}, ..Self::new("http://stripe.test", StripeSecret::new("sk_test_secret".into()), transport) }
    }

    /// One attempt, for health: the latency of `GET /v1/balance`.
    pub fn ping(&self, timeouts: Timeouts) -> Result<Duration, String> {
        let request = self.build("GET", "/v1/balance", None, None, timeouts);
        match send_logged(self.transport, "stripe", &request, 1, &[("purpose", "health".into())]) {
            Ok(response) if response.status == 200 => Ok(response.elapsed),
            Ok(response) => Err(format!("stripe answered {}", response.status)),
            Err(err) => Err(err.to_string()),
        }
    }

    fn build(&self, method: &'static str, path: &str, form: Option<&Form>, idempotency_key: Option<&str>, timeouts: Timeouts) -> HttpRequest {
        let mut headers = vec![
            ("authorization".to_string(), self.secret.bearer()),
            ("stripe-version".to_string(), STRIPE_VERSION.to_string()),
            ("accept".to_string(), "application/json".to_string()),
        ];
        if let Some(key) = idempotency_key {
            headers.push(("idempotency-key".to_string(), key.to_string()));
        }
        let body = form.map(|f| {
            headers.push(("content-type".to_string(), "application/x-www-form-urlencoded".to_string()));
            f.encode().into_bytes()
        });
        HttpRequest { method, url: format!("{}{path}", self.base), headers, body, timeouts, max_body: MAX_BODY }
    }

    /// Sends with retries; returns the parsed JSON of a 2xx answer.
    fn call(&self, method: &'static str, path: &str, form: Option<&Form>, idempotency_key: Option<&str>) -> Result<Value, StripeError> {
        debug_assert!(method != "POST" || idempotency_key.is_some(), "every POST carries an Idempotency-Key");
        let request = self.build(method, path, form, idempotency_key, self.timeouts);
        let mut attempt = 1;
        loop {
            // Stripe takes no request id of ours: the call's log line carries it instead.
            let result = send_logged(self.transport, "stripe", &request, attempt, &[]);
            let retryable = match &result {
                Ok(response) if response.status < 300 => {
                    return serde_json::from_slice(&response.body)
                        .map_err(|_| StripeError::Malformed(format!("{method} {}: body is not JSON", telemetry::path_of(path))));
                }
                Ok(response) => {
                    match response.header("stripe-should-retry") {
                        Some("true") => true,
                        Some("false") => false,
                        _ => response.status == 429 || response.status >= 500,
                    }
                }
                Err(err) => {
                    matches!(err, TransportError::Connect(_) | TransportError::Timeout(_) | TransportError::Interrupted(_))
                }
            };
            if retryable && attempt < self.max_attempts {
                (self.sleep)(backoff(attempt));
                attempt += 1;
                continue;
            }
            return Err(match result {
                Ok(response) => map_error(&response),
                Err(err) => StripeError::Unavailable(err.to_string()),
            });
        }
    }
}

/// Stripe's error body → our error. Messages are passed on (scrubbed of anything key-like) only
/// for card and invalid-request errors.
pub fn map_error(response: &HttpResponse) -> StripeError {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let error = body.get("error");
    let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str).map(str::to_string);
    let kind = field("type").unwrap_or_default();
    let message = scrub(&field("message").unwrap_or_else(|| format!("Stripe answered {}", response.status)));
    match (response.status, kind.as_str()) {
        (402, _) | (_, "card_error") => StripeError::Card { message, code: field("decline_code").or_else(|| field("code")) },
        (_, "idempotency_error") => StripeError::Idempotency(message),
        (401 | 403, _) => StripeError::Authentication(response.status),
        (429, _) => StripeError::Unavailable("rate limited".into()),
        (status, _) if status >= 500 => StripeError::Unavailable(format!("status {status}")),
        (status, _) => StripeError::InvalidRequest { message, param: field("param"), code: field("code"), status },
    }
}

fn customer_ref(value: &Value) -> Option<StripeCustomerRef> {
    Some(StripeCustomerRef {
        id: value.get("id").and_then(Value::as_str).filter(|s| is_stripe_id(s))?.to_string(),
        user_id: value.get("metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str).map(str::to_string),
        created: value.get("created").and_then(Value::as_i64).unwrap_or(0),
    })
}

fn list_data(value: &Value) -> Result<&Vec<Value>, StripeError> {
    value.get("data").and_then(Value::as_array).ok_or_else(|| StripeError::Malformed("list without data".into()))
}

fn subscription(value: &Value) -> Result<StripeSubscription, StripeError> {
    StripeSubscription::from_json(value).ok_or_else(|| StripeError::Malformed("unreadable subscription".into()))
}

fn payment_method(value: &Value) -> Result<StripePaymentMethod, StripeError> {
    StripePaymentMethod::from_json(value).ok_or_else(|| StripeError::Malformed("unreadable payment method".into()))
}

fn invoice(value: &Value) -> Option<Invoice> {
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
    Some(Invoice {
        id: text("id").filter(|s| is_stripe_id(s))?,
        number: text("number"),
        status: text("status"),
        amount_due: value.get("amount_due").and_then(Value::as_i64).unwrap_or(0),
        amount_paid: value.get("amount_paid").and_then(Value::as_i64).unwrap_or(0),
        currency: text("currency").unwrap_or_default(),
        created: value.get("created").and_then(Value::as_i64).unwrap_or(0),
        hosted_invoice_url: text("hosted_invoice_url"),
        invoice_pdf: text("invoice_pdf"),
    })
}

/// An invoice with its customer, subscription and expanded PaymentIntent. The subscription is
/// `subscription` in the pinned API version, `parent.subscription_details.subscription` in newer
/// ones.
fn stripe_invoice(value: &Value) -> Result<StripeInvoice, StripeError> {
    let id_of = |v: Option<&Value>| v.and_then(|v| v.as_str().or_else(|| v.get("id").and_then(Value::as_str))).map(str::to_string);
    let subscription = id_of(value.get("subscription"))
        .or_else(|| id_of(value.get("parent").and_then(|p| p.get("subscription_details")).and_then(|d| d.get("subscription"))));
    Ok(StripeInvoice {
        invoice: invoice(value).ok_or_else(|| StripeError::Malformed("unreadable invoice".into()))?,
        customer: id_of(value.get("customer")),
        subscription,
        pending_payment: value.get("payment_intent").and_then(PendingPayment::from_payment_intent),
    })
}

/// An invoice preview as Stripe answers `create_preview`: the amounts and currency are required,
/// a line without its amount is unreadable.
fn invoice_preview(value: &Value) -> Option<InvoicePreview> {
    let amount = |v: &Value, name: &str| v.get(name).and_then(Value::as_i64);
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let lines = value.get("lines").and_then(|l| l.get("data")).and_then(Value::as_array)?;
    let lines = lines
        .iter()
        .map(|line| {
            let period = line.get("period");
            let period_at = |name: &str| period.and_then(|p| p.get(name)).and_then(Value::as_i64);
            // The price as an object (what 2024-06-20 answers), or expanded to its id alone.
            let price = line.get("price").and_then(|p| p.get("id").unwrap_or(p).as_str()).map(str::to_string);
            Some(InvoiceLine {
                description: text(line, "description"),
                amount: amount(line, "amount")?,
                currency: text(line, "currency")?,
                price_id: price,
                proration: line.get("proration").and_then(Value::as_bool).unwrap_or(false),
                period_start: period_at("start"),
                period_end: period_at("end"),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(InvoicePreview {
        amount_due: amount(value, "amount_due")?,
        subtotal: amount(value, "subtotal")?,
        total: amount(value, "total")?,
        currency: text(value, "currency")?,
        next_payment_attempt: amount(value, "next_payment_attempt"),
        lines,
    })
}

impl StripeClient<'_> {
    /// One subscription; `None` when Stripe knows no such subscription.
    fn read_subscription(&self, path: &str) -> Result<Option<StripeSubscription>, StripeError> {
        match self.call("GET", path, None, None) {
            Ok(value) => subscription(&value).map(Some),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }
}

impl Billing for StripeClient<'_> {
    fn create_customer(&self, customer: &NewStripeCustomer<'_>, idempotency_key: &str) -> Result<StripeCustomerRef, StripeError> {
        let form = Form::new()
            .field(&["name"], customer.name)
            .field(&["email"], customer.email)
            .field(&["metadata", "user_id"], customer.user_id);
        let value = self.call("POST", "/v1/customers", Some(&form), Some(idempotency_key))?;
        customer_ref(&value).ok_or_else(|| StripeError::Malformed("unreadable customer".into()))
    }

    fn customers_by_email(&self, email: &str) -> Result<Vec<StripeCustomerRef>, StripeError> {
        let query = Form::new().field(&["email"], email).field(&["limit"], "100").encode();
        let value = self.call("GET", &format!("/v1/customers?{query}"), None, None)?;
        Ok(list_data(&value)?.iter().filter_map(customer_ref).collect())
    }

    fn customer_exists(&self, id: &str) -> Result<bool, StripeError> {
        match self.call("GET", &format!("/v1/customers/{}", path_segment(id)?), None, None) {
            Ok(value) => Ok(!value.get("deleted").and_then(Value::as_bool).unwrap_or(false)),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn delete_customer(&self, id: &str) -> Result<(), StripeError> {
        match self.call("DELETE", &format!("/v1/customers/{}", path_segment(id)?), None, None) {
            Ok(_) => Ok(()),
            Err(err) if err.is_not_found() => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn update_customer_profile(&self, id: &str, profile: &Profile, idempotency_key: &str) -> Result<(), StripeError> {
        let form = Form::new().field(&["name"], profile.name.as_str()).field(&["email"], profile.email.as_str());
        self.call("POST", &format!("/v1/customers/{}", path_segment(id)?), Some(&form), Some(idempotency_key)).map(drop)
    }

    fn profile_digest(&self, profile: &Profile) -> String {
        billing::profile_digest(self.secret.0.as_bytes(), profile)
    }

    fn create_subscription(&self, new: &NewSubscription<'_>, idempotency_key: &str) -> Result<StripeSubscription, StripeError> {
        let mut form = Form::new()
            .field(&["customer"], new.customer)
            .field(&["items", "0", "price"], new.order.price.as_str())
            .field(&["items", "0", "quantity"], new.order.quantity.get().to_string())
            .field(&["metadata", "user_id"], new.user_id)
            .field(&["metadata", "subscription_id"], new.local_id)
            .field(&["expand", "0"], "latest_invoice.payment_intent");
        if let Some(promotion) = new.promotion {
            form = form.field(&["discounts", "0", "promotion_code"], promotion);
        }
        if let Some(days) = new.trial_days {
            // A trial that ends with no card on file cancels instead of leaving an unpaid
            // invoice and a past_due subscription behind.
            form = form
                .field(&["trial_period_days"], days.to_string())
                .field(&["trial_settings", "end_behavior", "missing_payment_method"], "cancel");
        }
        subscription(&self.call("POST", "/v1/subscriptions", Some(&form), Some(idempotency_key))?)
    }

    fn promotion_code_id(&self, code: &str) -> Result<Option<String>, StripeError> {
        let query = Form::new().field(&["code"], code).field(&["active"], "true").field(&["limit"], "1").encode();
        let value = self.call("GET", &format!("/v1/promotion_codes?{query}"), None, None)?;
        let first = list_data(&value)?.first();
        Ok(first.and_then(|p| p.get("id")).and_then(Value::as_str).filter(|id| is_stripe_id(id)).map(str::to_string))
    }

    fn subscription(&self, id: &str) -> Result<Option<StripeSubscription>, StripeError> {
        self.read_subscription(&format!("/v1/subscriptions/{}", path_segment(id)?))
    }

    fn subscription_with_payment(&self, id: &str) -> Result<Option<StripeSubscription>, StripeError> {
        self.read_subscription(&format!("/v1/subscriptions/{}?expand%5B0%5D=latest_invoice.payment_intent", path_segment(id)?))
    }

    fn subscriptions_of(&self, customer: &str) -> Result<Vec<StripeSubscription>, StripeError> {
        let query = Form::new().field(&["customer"], customer).field(&["status"], "all").field(&["limit"], "100").encode();
        let value = self.call("GET", &format!("/v1/subscriptions?{query}"), None, None)?;
        list_data(&value)?.iter().map(subscription).collect()
    }

    fn set_cancel_at_period_end(&self, id: &str, cancel: bool, idempotency_key: &str) -> Result<StripeSubscription, StripeError> {
        let form = Form::new().field(&["cancel_at_period_end"], if cancel { "true" } else { "false" });
        subscription(&self.call("POST", &format!("/v1/subscriptions/{}", path_segment(id)?), Some(&form), Some(idempotency_key))?)
    }

    fn change_item(&self, id: &str, change: ItemChange<'_>, idempotency_key: &str) -> Result<StripeSubscription, StripeError> {
        let form = Form::new()
            .field(&["items", "0", "id"], change.item_id)
            .field(&["items", "0", "price"], change.price.as_str())
            .field(&["items", "0", "quantity"], change.quantity.to_string())
            .field(&["expand", "0"], "latest_invoice.payment_intent");
        subscription(&self.call("POST", &format!("/v1/subscriptions/{}", path_segment(id)?), Some(&form), Some(idempotency_key))?)
    }

    fn cancel_now(&self, id: &str) -> Result<StripeSubscription, StripeError> {
        subscription(&self.call("DELETE", &format!("/v1/subscriptions/{}", path_segment(id)?), None, None)?)
    }

    fn invoices(&self, customer: &str, limit: u32, starting_after: Option<&str>) -> Result<InvoicePage, StripeError> {
        let mut form = Form::new().field(&["customer"], customer).field(&["limit"], limit.to_string());
        if let Some(cursor) = starting_after {
            form = form.field(&["starting_after"], cursor);
        }
        let value = self.call("GET", &format!("/v1/invoices?{}", form.encode()), None, None)?;
        let invoices = list_data(&value)?.iter().filter_map(invoice).collect();
        Ok(InvoicePage { invoices, has_more: value.get("has_more").and_then(Value::as_bool).unwrap_or(false) })
    }

    fn preview_invoice(&self, customer: &str, subscription: &str, change: Option<(ItemChange<'_>, i64)>, idempotency_key: &str)
    -> Result<Option<InvoicePreview>, StripeError> {
        let mut form = Form::new().field(&["customer"], customer).field(&["subscription"], subscription);
        if let Some((change, proration_date)) = change {
            form = form
                .field(&["subscription_details", "items", "0", "id"], change.item_id)
                .field(&["subscription_details", "items", "0", "price"], change.price.as_str())
                .field(&["subscription_details", "items", "0", "quantity"], change.quantity.to_string())
                .field(&["subscription_details", "proration_date"], proration_date.to_string());
        }
        match self.call("POST", "/v1/invoices/create_preview", Some(&form), Some(idempotency_key)) {
            Ok(value) => invoice_preview(&value).map(Some).ok_or_else(|| StripeError::Malformed("unreadable invoice preview".into())),
            // Stripe's answer for a subscription that ends before it would invoice again.
            Err(StripeError::InvalidRequest { code, status, param, .. })
                if code.as_deref() == Some("invoice_upcoming_none") || (status == 404 && param.is_none()) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn create_setup_intent(&self, customer: &str, user_id: &str, idempotency_key: &str) -> Result<SetupIntent, StripeError> {
        let form = Form::new().field(&["customer"], customer).field(&["usage"], "off_session").field(&["metadata", "user_id"], user_id);
        let value = self.call("POST", "/v1/setup_intents", Some(&form), Some(idempotency_key))?;
        let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
        match (text("id").filter(|id| is_stripe_id(id)), text("client_secret"), text("status")) {
            (Some(id), Some(client_secret), Some(status)) => Ok(SetupIntent { id, client_secret, status }),
            _ => Err(StripeError::Malformed("unreadable setup intent".into())),
        }
    }

    fn payment_method(&self, id: &str) -> Result<Option<StripePaymentMethod>, StripeError> {
        match self.call("GET", &format!("/v1/payment_methods/{}", path_segment(id)?), None, None) {
            Ok(value) => payment_method(&value).map(Some),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn attach_payment_method(&self, id: &str, customer: &str, idempotency_key: &str) -> Result<StripePaymentMethod, StripeError> {
        let form = Form::new().field(&["customer"], customer);
        payment_method(&self.call("POST", &format!("/v1/payment_methods/{}/attach", path_segment(id)?), Some(&form), Some(idempotency_key))?)
    }

    fn set_default_payment_method(&self, customer: &str, payment_method: &str, idempotency_key: &str) -> Result<(), StripeError> {
        let form = Form::new().field(&["invoice_settings", "default_payment_method"], payment_method);
        self.call("POST", &format!("/v1/customers/{}", path_segment(customer)?), Some(&form), Some(idempotency_key)).map(drop)
    }

    fn default_payment_method(&self, customer: &str) -> Result<Option<String>, StripeError> {
        let value = self.call("GET", &format!("/v1/customers/{}", path_segment(customer)?), None, None)?;
        let default = value.get("invoice_settings").and_then(|settings| settings.get("default_payment_method"));
        // An id, or the object when expanded.
        Ok(default.and_then(|d| d.as_str().or_else(|| d.get("id").and_then(Value::as_str))).map(str::to_string))
    }

    fn clear_default_payment_method(&self, customer: &str, idempotency_key: &str) -> Result<(), StripeError> {
        // An empty value unsets the field (Stripe's convention for nullable parameters).
        let form = Form::new().field(&["invoice_settings", "default_payment_method"], "");
        self.call("POST", &format!("/v1/customers/{}", path_segment(customer)?), Some(&form), Some(idempotency_key)).map(drop)
    }

    fn detach_payment_method(&self, id: &str, idempotency_key: &str) -> Result<(), StripeError> {
        let form = Form::new();
        self.call("POST", &format!("/v1/payment_methods/{}/detach", path_segment(id)?), Some(&form), Some(idempotency_key)).map(drop)
    }

    fn create_portal_session(&self, customer: &str, return_url: Option<&str>, idempotency_key: &str) -> Result<String, StripeError> {
        let mut form = Form::new().field(&["customer"], customer);
        if let Some(url) = return_url {
            form = form.field(&["return_url"], url);
        }
        let value = self.call("POST", "/v1/billing_portal/sessions", Some(&form), Some(idempotency_key))?;
        // Only an https page of Stripe's (or http on a stand-in) is passed to the client.
        match value.get("url").and_then(Value::as_str) {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => Ok(url.to_string()),
            _ => Err(StripeError::Malformed("unreadable portal session".into())),
        }
    }

    fn invoice(&self, id: &str) -> Result<Option<StripeInvoice>, StripeError> {
        match self.call("GET", &format!("/v1/invoices/{}?expand%5B0%5D=payment_intent", path_segment(id)?), None, None) {
            Ok(value) => stripe_invoice(&value).map(Some),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn pay_invoice(&self, id: &str, idempotency_key: &str) -> Result<StripeInvoice, StripeError> {
        let form = Form::new().field(&["expand", "0"], "payment_intent");
        stripe_invoice(&self.call("POST", &format!("/v1/invoices/{}/pay", path_segment(id)?), Some(&form), Some(idempotency_key))?)
    }

    fn create_checkout_session(&self, new: &NewSubscription<'_>, urls: CheckoutUrls<'_>, idempotency_key: &str) -> Result<CheckoutSession, StripeError> {
        let mut form = Form::new().field(&["mode"], "subscription").field(&["customer"], new.customer);
        // Stripe takes at most 200 characters here (auth's ids are 36); the metadata has it anyway.
        if new.user_id.len() <= 200 {
            form = form.field(&["client_reference_id"], new.user_id);
        }
        form = form
            .field(&["line_items", "0", "price"], new.order.price.as_str())
            .field(&["line_items", "0", "quantity"], new.order.quantity.get().to_string())
            .field(&["subscription_data", "metadata", "user_id"], new.user_id)
            .field(&["subscription_data", "metadata", "subscription_id"], new.local_id)
            .field(&["success_url"], urls.success);
        if let Some(cancel) = urls.cancel {
            form = form.field(&["cancel_url"], cancel);
        }
        if let Some(promotion) = new.promotion {
            form = form.field(&["discounts", "0", "promotion_code"], promotion);
        }
        if let Some(days) = new.trial_days {
            form = form
                .field(&["subscription_data", "trial_period_days"], days.to_string())
                .field(&["subscription_data", "trial_settings", "end_behavior", "missing_payment_method"], "cancel");
        }
        let value = self.call("POST", "/v1/checkout/sessions", Some(&form), Some(idempotency_key))?;
        let id = value.get("id").and_then(Value::as_str).filter(|id| is_stripe_id(id));
        // Only an https page of Stripe's (or http on a stand-in) is passed to the client.
        let url = value.get("url").and_then(Value::as_str).filter(|url| url.starts_with("https://") || url.starts_with("http://"));
        match (id, url, value.get("expires_at").and_then(Value::as_i64)) {
            (Some(id), Some(url), Some(expires_at)) => Ok(CheckoutSession { id: id.to_string(), url: url.to_string(), expires_at }),
            _ => Err(StripeError::Malformed("unreadable checkout session".into())),
        }
    }

    fn checkout_session(&self, id: &str) -> Result<Option<CheckoutState>, StripeError> {
        match self.call("GET", &format!("/v1/checkout/sessions/{}", path_segment(id)?), None, None) {
            Ok(value) => CheckoutState::from_json(&value).map(Some).ok_or_else(|| StripeError::Malformed("unreadable checkout session".into())),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn open_checkout_sessions(&self, customer: &str) -> Result<Vec<String>, StripeError> {
        let query = Form::new().field(&["customer"], customer).field(&["status"], "open").field(&["limit"], "100").encode();
        let value = self.call("GET", &format!("/v1/checkout/sessions?{query}"), None, None)?;
        let ids = list_data(&value)?.iter().map(|session| session.get("id").and_then(Value::as_str).filter(|id| is_stripe_id(id)));
        ids.map(|id| id.map(str::to_string).ok_or_else(|| StripeError::Malformed("unreadable checkout session".into()))).collect()
    }

    fn expire_checkout_session(&self, id: &str) -> Result<(), StripeError> {
        let form = Form::new();
        // The client's retries of this call repeat the key; every later expiry gets its own.
        // Stripe keeps an answer for a key 24 h, a 500 too: a key of the session alone would
        // replay one 500 to every later expiry of it, and each subscribe, checkout, leaving
        // billing and erasure of the user (they expire open pages first) would fail for a day.
        // Expiring twice is refused by Stripe anyway.
        let key = format!("checkout-expire:{id}:{}", uuid::Uuid::new_v4());
        self.call("POST", &format!("/v1/checkout/sessions/{}/expire", path_segment(id)?), Some(&form), Some(&key)).map(drop)
    }

    fn billing_address(&self, customer: &str) -> Result<Option<BillingAddress>, StripeError> {
        let value = self.call("GET", &format!("/v1/customers/{}", path_segment(customer)?), None, None)?;
        Ok(value.get("address").and_then(BillingAddress::from_json))
    }

    fn set_billing_address(&self, customer: &str, address: &BillingAddress, idempotency_key: &str) -> Result<(), StripeError> {
        let optional = |field: &Option<String>| field.clone().unwrap_or_default();
        let form = Form::new()
            .field(&["address", "line1"], address.line1.as_str())
            .field(&["address", "line2"], optional(&address.line2))
            .field(&["address", "city"], optional(&address.city))
            .field(&["address", "postal_code"], optional(&address.postal_code))
            .field(&["address", "state"], optional(&address.state))
            .field(&["address", "country"], address.country.as_str());
        self.call("POST", &format!("/v1/customers/{}", path_segment(customer)?), Some(&form), Some(idempotency_key)).map(drop)
    }

    fn tax_ids(&self, customer: &str) -> Result<Vec<TaxId>, StripeError> {
        let value = self.call("GET", &format!("/v1/customers/{}/tax_ids?limit=100", path_segment(customer)?), None, None)?;
        list_data(&value)?.iter().map(|t| TaxId::from_json(t).ok_or_else(|| StripeError::Malformed("unreadable tax id".into()))).collect()
    }

    fn add_tax_id(&self, customer: &str, tax_id: &NewTaxId, idempotency_key: &str) -> Result<TaxId, StripeError> {
        let form = Form::new().field(&["type"], tax_id.kind()).field(&["value"], tax_id.value());
        let value = self.call("POST", &format!("/v1/customers/{}/tax_ids", path_segment(customer)?), Some(&form), Some(idempotency_key))?;
        TaxId::from_json(&value).ok_or_else(|| StripeError::Malformed("unreadable tax id".into()))
    }

    fn delete_tax_id(&self, customer: &str, id: &str) -> Result<bool, StripeError> {
        match self.call("DELETE", &format!("/v1/customers/{}/tax_ids/{}", path_segment(customer)?, path_segment(id)?), None, None) {
            Ok(_) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::domain::billing::tests::one;
    use crate::domain::{PriceId, Quantity, SubscriptionOrder};

    /// Answers from a script, records what was sent.
    struct Script {
        answers: RefCell<Vec<Result<HttpResponse, TransportError>>>,
        sent: RefCell<Vec<HttpRequest>>,
    }

    fn answer(status: u16, body: &str) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse { status, headers: Vec::new(), body: body.as_bytes().to_vec(), elapsed: Duration::ZERO })
    }

    impl Script {
        fn new(mut answers: Vec<Result<HttpResponse, TransportError>>) -> Self {
            answers.reverse();
            Self { answers: RefCell::new(answers), sent: RefCell::new(Vec::new()) }
        }
    }

    impl Transport for Script {
        fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
            self.sent.borrow_mut().push(request.clone());
            self.answers.borrow_mut().pop().expect("no more scripted answers")
        }
    }

    #[test]
    fn forms_nest_and_escape() {
        let form = Form::new().field(&["items", "0", "price"], "price_1").field(&["metadata", "user_id"], "a b&c");
        assert_eq!(form.encode(), "items%5B0%5D%5Bprice%5D=price_1&metadata%5Buser_id%5D=a+b%26c");
    }

    #[test]
    fn the_secret_never_prints() {
        let secret = StripeSecret::new("sk_live_supersecret".into());
        assert!(!format!("{secret:?} {secret}").contains("supersecret"));
    }

    #[test]
    fn posts_carry_version_and_idempotency_key_and_retry_5xx_and_timeouts() {
        let script = Script::new(vec![
            answer(500, "{}"),
            Err(TransportError::Timeout("first byte".into())),
            answer(200, r#"{"id":"cus_1","metadata":{"user_id":"u1"},"created":5}"#),
        ]);
        let client = StripeClient::for_tests(&script);
        let created = client
            .create_customer(&NewStripeCustomer { user_id: "u1", name: "A", email: "a@x.org" }, "customer-create:u1:1")
            .unwrap();
        assert_eq!(created.id, "cus_1");
        let sent = script.sent.borrow();
        assert_eq!(sent.len(), 3);
        for request in sent.iter() {
            let header = |n: &str| request.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            assert_eq!(header("idempotency-key").as_deref(), Some("customer-create:u1:1"));
            assert_eq!(header("stripe-version").as_deref(), Some(STRIPE_VERSION));
            assert_eq!(request.url, "http://stripe.test/v1/customers");
        }
    }

    #[test]
    fn retries_back_off_from_250_ms_doubling_to_at_most_2_s() {
        assert_eq!([1, 2, 3, 4, 5, 30].map(|retry| backoff(retry).as_millis()), [250, 500, 1000, 2000, 2000, 2000]);
        // What the client really sleeps between its attempts: the sleep is a plain fn, so it
        // records into a thread-local.
        thread_local! { static SLEPT: RefCell<Vec<Duration>> = const { RefCell::new(Vec::new()) }; }
        let script = Script::new(vec![answer(503, "{}"), answer(429, "{}"), answer(503, "{}")]);
        let client = StripeClient { sleep: |d| SLEPT.with(|slept| slept.borrow_mut().push(d)), ..StripeClient::for_tests(&script) };
        let err = client.create_customer(&NewStripeCustomer { user_id: "u1", name: "A", email: "a@x.org" }, "k").unwrap_err();
        assert_eq!(err, StripeError::Unavailable("status 503".into()));
        assert_eq!(script.sent.borrow().len(), MAX_ATTEMPTS as usize);
        assert_eq!(SLEPT.with(|slept| slept.borrow().clone()), [Duration::from_millis(250), Duration::from_millis(500)]);
    }

    #[test]
    fn client_errors_are_not_retried_and_are_mapped() {
        let script = Script::new(vec![answer(402, r#"{"error":{"type":"card_error","message":"Your card was declined.","decline_code":"generic_decline"}}"#)]);
        let client = StripeClient::for_tests(&script);
        let err = client
            .create_subscription(&NewSubscription { customer: "cus_1", order: &one(&PriceId::parse("price_1").unwrap()), promotion: None, trial_days: None, user_id: "u1", local_id: "l1" }, "k")
            .unwrap_err();
        assert_eq!(err, StripeError::Card { message: "Your card was declined.".into(), code: Some("generic_decline".into()) });
        assert_eq!(script.sent.borrow().len(), 1);

        let script = Script::new(vec![answer(400, r#"{"error":{"type":"invalid_request_error","message":"No such price: 'x'","param":"items[0][price]"}}"#)]);
        let err = StripeClient::for_tests(&script).subscription("sub_1").unwrap_err();
        assert!(matches!(err, StripeError::InvalidRequest { status: 400, .. }));

        let script = Script::new(vec![answer(401, r#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****cret"}}"#)]);
        assert_eq!(StripeClient::for_tests(&script).subscription("sub_1").unwrap_err(), StripeError::Authentication(401));

        // Connection refused three times: unavailable after three attempts.
        let script = Script::new(vec![
            Err(TransportError::Connect("refused".into())),
            Err(TransportError::Connect("refused".into())),
            Err(TransportError::Connect("refused".into())),
        ]);
        assert!(matches!(StripeClient::for_tests(&script).subscription("sub_1").unwrap_err(), StripeError::Unavailable(_)));
        assert_eq!(script.sent.borrow().len(), 3);

        // A 404 on retrieve is "none".
        let script = Script::new(vec![answer(404, r#"{"error":{"type":"invalid_request_error","message":"No such subscription"}}"#)]);
        assert_eq!(StripeClient::for_tests(&script).subscription("sub_1").unwrap(), None);
    }

    #[test]
    fn messages_are_scrubbed() {
        assert_eq!(scrub("Invalid API Key provided: sk_test_abc"), "Invalid API Key provided: [redacted]");
    }

    #[test]
    fn subscriptions_read_live_and_legacy_shapes() {
        let live = serde_json::json!({"id":"sub_1","customer":"cus_1","status":"active","created":10,
            "current_period_end":99,"cancel_at_period_end":true,"metadata":{"subscription_id":"l1"},
            "items":{"data":[{"price":{"id":"price_1"},"quantity":7}]}});
        let sub = StripeSubscription::from_json(&live).unwrap();
        assert_eq!((sub.price_id.as_deref(), sub.quantity), (Some("price_1"), Some(7)));
        assert_eq!(sub.current_period_end, Some(99));
        assert!(sub.cancel_at_period_end);
        assert_eq!(sub.local_id.as_deref(), Some("l1"));
        let legacy = serde_json::json!({"id":"sub_1","customer":{"id":"cus_1"},"status":"past_due","plan":{"id":"plan_1"}});
        let sub = StripeSubscription::from_json(&legacy).unwrap();
        assert_eq!((sub.price_id.as_deref(), sub.quantity), (Some("plan_1"), None));
        assert!(StripeSubscription::from_json(&serde_json::json!({"id":"sub_1"})).is_none());
    }

    #[test]
    fn a_payment_waiting_for_the_user_is_read_from_the_expanded_invoice() {
        let with = |status: &str, intent: serde_json::Value| {
            let value = serde_json::json!({"id":"sub_1","customer":"cus_1","status":status,
                "latest_invoice":{"id":"in_1","payment_intent":intent}});
            StripeSubscription::from_json(&value).unwrap().pending_payment
        };
        let waiting = serde_json::json!({"id":"pi_1","status":"requires_action","client_secret":"pi_1_secret_x"});
        assert_eq!(
            with("incomplete", waiting.clone()),
            Some(crate::domain::PendingPayment { status: "requires_action".into(), client_secret: "pi_1_secret_x".into() })
        );
        assert!(with("past_due", waiting.clone()).is_some());
        assert_eq!(with("active", waiting), None, "nothing is due on an active subscription");
        assert_eq!(with("incomplete", serde_json::json!({"id":"pi_1","status":"succeeded","client_secret":"pi_1_secret_x"})), None);
        assert_eq!(with("incomplete", serde_json::json!({"id":"pi_1","status":"requires_action"})), None, "no secret, nothing to hand on");
        assert_eq!(with("incomplete", serde_json::json!("pi_1")), None, "not expanded");
    }

    #[test]
    fn payment_methods_show_a_cards_brand_last_four_and_expiry_and_their_customer() {
        let card = serde_json::json!({"id":"pm_1","type":"card","customer":"cus_1",
            "card":{"brand":"visa","last4":"4242","exp_month":12,"exp_year":2031,"fingerprint":"f"}});
        let method = StripePaymentMethod::from_json(&card).unwrap();
        assert_eq!(method.customer.as_deref(), Some("cus_1"));
        assert_eq!(method.summary.card.unwrap().last4, "4242");
        let expanded = serde_json::json!({"id":"pm_2","type":"sepa_debit","customer":{"id":"cus_2"}});
        let method = StripePaymentMethod::from_json(&expanded).unwrap();
        assert_eq!((method.customer.as_deref(), method.summary.card), (Some("cus_2"), None));
        assert!(StripePaymentMethod::from_json(&serde_json::json!({"id":"pm/../x","type":"card"})).is_none());
    }

    #[test]
    fn invoices_carry_their_links_and_need_an_id() {
        let read = invoice(&serde_json::json!({"id":"in_1","number":"A-1","status":"paid","amount_due":1500,"amount_paid":1500,
            "currency":"eur","created":1700000000,"hosted_invoice_url":"https://invoice.stripe.com/i/x",
            "invoice_pdf":"https://pay.stripe.com/invoice/x/pdf"}))
        .unwrap();
        assert_eq!(read.invoice_pdf.as_deref(), Some("https://pay.stripe.com/invoice/x/pdf"));
        assert_eq!(read.hosted_invoice_url.as_deref(), Some("https://invoice.stripe.com/i/x"));
        let draft = invoice(&serde_json::json!({"id":"in_2","status":"draft","invoice_pdf":null})).unwrap();
        assert_eq!((draft.invoice_pdf, draft.amount_due), (None, 0));
        assert!(invoice(&serde_json::json!({"id":"../in_3"})).is_none());
    }

    #[test]
    fn an_invoice_preview_sends_the_change_and_reads_the_lines() {
        let preview = r#"{"object":"invoice","amount_due":1200,"subtotal":1200,"total":1200,"currency":"eur",
            "next_payment_attempt":1800000000,"lines":{"data":[
              {"amount":-400,"currency":"eur","description":"Unused time","proration":true,"price":{"id":"price_a"},
               "period":{"start":1700000000,"end":1800000000}},
              {"amount":1600,"currency":"eur","proration":false,"price":"price_b"}]}}"#;
        let script = Script::new(vec![
            answer(200, preview),
            answer(404, r#"{"error":{"type":"invalid_request_error","code":"invoice_upcoming_none","message":"No upcoming invoices"}}"#),
            answer(200, r#"{"amount_due":1,"currency":"eur","lines":{"data":[]}}"#),
        ]);
        let client = StripeClient::for_tests(&script);
        let price = PriceId::parse("price_b").unwrap();
        let change = ItemChange { item_id: "si_1", price: &price, quantity: 3 };
        let read = client.preview_invoice("cus_1", "sub_1", Some((change, 1_750_000_000)), "invoice-preview:1").unwrap().unwrap();
        assert_eq!((read.amount_due, read.currency.as_str(), read.next_payment_attempt), (1200, "eur", Some(1_800_000_000)));
        let lines: Vec<_> = read.lines.iter().map(|l| (l.amount, l.price_id.as_deref(), l.proration, l.period_end)).collect();
        assert_eq!(lines, [(-400, Some("price_a"), true, Some(1_800_000_000)), (1600, Some("price_b"), false, None)]);
        let sent = script.sent.borrow();
        assert_eq!((sent[0].method, sent[0].url.as_str()), ("POST", "http://stripe.test/v1/invoices/create_preview"));
        assert_eq!(
            form_fields(&sent[0]),
            ["customer=cus_1", "subscription=sub_1", "subscription_details[items][0][id]=si_1",
             "subscription_details[items][0][price]=price_b", "subscription_details[items][0][quantity]=3",
             "subscription_details[proration_date]=1750000000"]
        );
        drop(sent);
        // Nothing to invoice is no preview; a preview without its amounts is unreadable.
        assert_eq!(client.preview_invoice("cus_1", "sub_1", None, "k2").unwrap(), None);
        assert!(matches!(client.preview_invoice("cus_1", "sub_1", None, "k3").unwrap_err(), StripeError::Malformed(_)));
    }

    /// A request's form body as `key=value` strings, in order.
    fn form_fields(request: &HttpRequest) -> Vec<String> {
        let body = request.body.clone().unwrap_or_default();
        form_urlencoded::parse(&body).map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn subscriptions_are_made_and_changed_with_their_price_and_quantity() {
        let sub = r#"{"id":"sub_1","customer":"cus_1","status":"active","items":{"data":[{"id":"si_1","price":{"id":"price_b"},"quantity":4}]}}"#;
        let script = Script::new(vec![answer(200, sub), answer(200, sub)]);
        let client = StripeClient::for_tests(&script);
        let code = crate::domain::PromotionCode::parse("LAUNCH20").ok();
        let order = SubscriptionOrder { price: PriceId::parse("price_a").unwrap(), quantity: Quantity::parse(2).unwrap(), promotion_code: code };
        client.create_subscription(&NewSubscription { customer: "cus_1", order: &order, promotion: Some("promo_1"), trial_days: None, user_id: "u1", local_id: "l1" }, "k1").unwrap();
        let price = PriceId::parse("price_b").unwrap();
        let changed = client.change_item("sub_1", ItemChange { item_id: "si_1", price: &price, quantity: 4 }, "k2").unwrap();
        assert_eq!((changed.item_id.as_deref(), changed.quantity), (Some("si_1"), Some(4)));
        let sent = script.sent.borrow();
        let items = |i: usize| form_fields(&sent[i]).into_iter().filter(|f| f.starts_with("items[")).collect::<Vec<_>>();
        assert_eq!(items(0), ["items[0][price]=price_a", "items[0][quantity]=2"]);
        // The promotion code's id, never the code the user typed.
        assert!(form_fields(&sent[0]).contains(&"discounts[0][promotion_code]=promo_1".to_string()));
        assert_eq!(items(1), ["items[0][id]=si_1", "items[0][price]=price_b", "items[0][quantity]=4"]);
        assert_eq!(sent[1].url, "http://stripe.test/v1/subscriptions/sub_1");
    }

    #[test]
    fn a_checkout_session_carries_the_order_to_the_subscription_it_makes() {
        let session = r#"{"id":"cs_test_1","object":"checkout.session","url":"https://checkout.stripe.com/c/pay/cs_test_1","expires_at":1800000000}"#;
        let script = Script::new(vec![
            answer(200, session),
            answer(200, r#"{"object":"list","data":[{"id":"cs_test_0"},{"id":"cs_test_1"}]}"#),
            answer(200, r#"{"id":"cs_test_0","status":"expired"}"#),
            answer(200, r#"{"id":"cs_test_2","url":"javascript:alert(1)","expires_at":1}"#),
            answer(200, r#"{"id":"cs_test_0","status":"expired"}"#),
        ]);
        let client = StripeClient::for_tests(&script);
        let order = SubscriptionOrder { price: PriceId::parse("price_a").unwrap(), quantity: Quantity::parse(3).unwrap(), promotion_code: None };
        let new = NewSubscription { customer: "cus_1", order: &order, promotion: Some("promo_1"), trial_days: Some(14), user_id: "u1", local_id: "l1" };
        let urls = CheckoutUrls { success: "https://app.example.org/billing?session={CHECKOUT_SESSION_ID}", cancel: None };
        let made = client.create_checkout_session(&new, urls, "k1").unwrap();
        assert_eq!(made, CheckoutSession { id: "cs_test_1".into(), url: "https://checkout.stripe.com/c/pay/cs_test_1".into(), expires_at: 1_800_000_000 });
        assert_eq!(client.open_checkout_sessions("cus_1").unwrap(), ["cs_test_0", "cs_test_1"]);
        client.expire_checkout_session("cs_test_0").unwrap();
        // A page that is not http(s) never reaches the client.
        assert!(matches!(client.create_checkout_session(&new, urls, "k2").unwrap_err(), StripeError::Malformed(_)));
        client.expire_checkout_session("cs_test_0").unwrap();
        let sent = script.sent.borrow();
        // Each expiry its own key (a kept 500 is never replayed to a later one).
        let key = |i: usize| sent[i].headers.iter().find(|(name, _)| name == "idempotency-key").map(|(_, value)| value.clone());
        assert!(key(2).is_some_and(|k| k.starts_with("checkout-expire:cs_test_0:")) && key(2) != key(4), "{:?} {:?}", key(2), key(4));
        assert_eq!(
            form_fields(&sent[0]),
            ["mode=subscription", "customer=cus_1", "client_reference_id=u1", "line_items[0][price]=price_a", "line_items[0][quantity]=3",
             "subscription_data[metadata][user_id]=u1", "subscription_data[metadata][subscription_id]=l1",
             "success_url=https://app.example.org/billing?session={CHECKOUT_SESSION_ID}", "discounts[0][promotion_code]=promo_1",
             "subscription_data[trial_period_days]=14", "subscription_data[trial_settings][end_behavior][missing_payment_method]=cancel"]
        );
        assert_eq!(sent[1].url, "http://stripe.test/v1/checkout/sessions?customer=cus_1&status=open&limit=100");
        assert_eq!((sent[2].method, sent[2].url.as_str()), ("POST", "http://stripe.test/v1/checkout/sessions/cs_test_0/expire"));
    }

    #[test]
    fn ids_with_slashes_never_reach_a_path() {
        let script = Script::new(vec![]);
        assert!(matches!(StripeClient::for_tests(&script).subscription("../v1/x").unwrap_err(), StripeError::Malformed(_)));
    }
}
