//! The values the rules work on. Every type that carries request-influenced data is built through
//! a parser that refuses bad input, so the rest of the code can rely on it.

use std::collections::BTreeSet;
use std::fmt;

/// An auth user id, which is also the customer id (the seed's shared `id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if raw.len() > Self::MAX_LEN {
            return Err("must be at most 255 bytes");
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/') {
            return Err("must not contain whitespace, control characters or '/'");
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a list of area ids was refused; `index` is 0-based in the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AreaIdsError {
    #[error("must contain at least one area id")]
    Empty,
    #[error("must contain at most {max} area ids, got {got}")]
    TooMany { max: usize, got: usize },
    #[error("area id at index {index} must be a positive integer")]
    NotPositive { index: usize },
    #[error("area id at index {index} is larger than {max}")]
    TooLarge { index: usize, max: i64 },
    #[error("area id {value} appears more than once")]
    Duplicate { value: i64 },
}

impl AreaIdsError {
    /// The stable code of a field error (as auth's field errors have).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "too_few",
            Self::TooMany { .. } => "too_many",
            Self::NotPositive { .. } | Self::TooLarge { .. } => "out_of_range",
            Self::Duplicate { .. } => "duplicate",
        }
    }
}

/// 1..=100 distinct positive area ids (the seed's `area_ids`), kept sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaIds(Vec<u32>);

impl AreaIds {
    pub const MAX: usize = 100;
    /// Stored in an `INT` column.
    pub const MAX_VALUE: i64 = i32::MAX as i64;

    pub fn parse(raw: &[i64]) -> Result<Self, AreaIdsError> {
        if raw.is_empty() {
            return Err(AreaIdsError::Empty);
        }
        if raw.len() > Self::MAX {
            return Err(AreaIdsError::TooMany { max: Self::MAX, got: raw.len() });
        }
        let mut seen = BTreeSet::new();
        for (index, &value) in raw.iter().enumerate() {
            if value <= 0 {
                return Err(AreaIdsError::NotPositive { index });
            }
            if value > Self::MAX_VALUE {
                return Err(AreaIdsError::TooLarge { index, max: Self::MAX_VALUE });
            }
            let value32 = u32::try_from(value).map_err(|_| AreaIdsError::TooLarge { index, max: Self::MAX_VALUE })?;
            if !seen.insert(value32) {
                return Err(AreaIdsError::Duplicate { value });
            }
        }
        Ok(Self(seen.into_iter().collect()))
    }

    /// Rows read back from the database (already valid when written; an empty list is allowed
    /// here because a legacy row may have none).
    pub fn from_stored(mut ids: Vec<u32>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        Self(ids)
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.0
    }
}

/// A Stripe price id (`price_...`; a legacy plan id also works as a price in Stripe's API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceId(String);

impl PriceId {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() || raw.len() > 255 {
            return Err("must be 1 to 255 characters");
        }
        if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')) {
            return Err("may contain only letters, digits and _ - . :");
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many units of its price a subscription bills (seats, say): 1 to [`Quantity::MAX`]. The
/// bound is ours, not Stripe's: it stops a typo from billing a million seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 10_000;
    pub const ONE: Self = Self(1);
    /// Why a quantity was refused.
    pub const OUT_OF_RANGE: &'static str = "must be from 1 to 10000";

    pub fn parse(raw: i64) -> Result<Self, &'static str> {
        match u32::try_from(raw) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(Self::OUT_OF_RANGE),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// What a user subscribes to: a price, how many units of it, and a promotion code the user
/// typed, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOrder {
    pub price: PriceId,
    pub quantity: Quantity,
    pub promotion_code: Option<PromotionCode>,
}

/// A customer-facing promotion code as the user types it (`LAUNCH20`), not Stripe's
/// `promo_...` id: 1 to 64 letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionCode(String);

impl PromotionCode {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let code = raw.trim();
        if code.is_empty() || code.len() > 64 || !code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')) {
            return Err("must be 1 to 64 letters, digits, - and _");
        }
        Ok(Self(code.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Stripe PaymentMethod id (`pm_...`), as Stripe.js hands it to the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethodId(String);

impl PaymentMethodId {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if !raw.starts_with("pm_") || raw.len() == 3 {
            return Err("must be a PaymentMethod id (pm_...)");
        }
        if !is_stripe_id(raw) {
            return Err("may contain only letters, digits and _, at most 255 characters");
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A payment method as its owner may see it: the kind, and for a card its brand, last four
/// digits and expiry (never more of the number, which Stripe does not hold for us anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethodSummary {
    pub id: String,
    /// Stripe's `type`: `card`, `sepa_debit`, ...
    pub kind: String,
    pub card: Option<CardSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSummary {
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
}

/// A payment method at Stripe, with the customer it is attached to (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripePaymentMethod {
    pub summary: PaymentMethodSummary,
    pub customer: Option<String>,
}

impl StripePaymentMethod {
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        use serde_json::Value;
        let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
        let card = value.get("card").filter(|c| c.is_object()).map(|c| CardSummary {
            brand: text(c, "brand").unwrap_or_default(),
            last4: text(c, "last4").unwrap_or_default(),
            exp_month: c.get("exp_month").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            exp_year: c.get("exp_year").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        });
        Some(Self {
            summary: PaymentMethodSummary {
                id: text(value, "id").filter(|id| is_stripe_id(id))?,
                kind: text(value, "type").unwrap_or_default(),
                card,
            },
            // `customer` is an id, or the customer object when expanded.
            customer: value
                .get("customer")
                .and_then(|c| c.as_str().map(str::to_string).or_else(|| text(c, "id"))),
        })
    }
}

/// The 249 officially assigned ISO 3166-1 alpha-2 codes, and `XK` (Kosovo, user-assigned by
/// ISO but a country in Stripe's list), sorted. Data, checked against the standard's list when written.
pub const COUNTRY_CODES: &str = "\
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU \
ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ \
LA LB LC LI LK LR LS LT LU LV LY \
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA \
RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW";

/// The postal address Stripe prints on the customer's invoices (the buyer's address an EU VAT
/// invoice must carry) and Stripe Tax computes with. Each line given is trimmed, at most 200
/// characters without control characters (`line1` is required); `country` is an ISO 3166-1
/// alpha-2 code, kept upper case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingAddress {
    pub line1: String,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub state: Option<String>,
    pub country: String,
}

impl BillingAddress {
    pub const MAX_LINE: usize = 200;

    /// A line of the address: trimmed; None when empty.
    pub fn parse_line(raw: &str) -> Result<Option<String>, &'static str> {
        let line = raw.trim();
        if line.chars().count() > Self::MAX_LINE {
            return Err("must be at most 200 characters");
        }
        if line.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok((!line.is_empty()).then(|| line.to_string()))
    }

    /// A country Stripe can print and tax: one of the [`COUNTRY_CODES`], in either case. Two
    /// letters alone are not enough: Stripe keeps an unassigned code such as `ZZ` as given and
    /// the invoice shows it.
    pub fn parse_country(raw: &str) -> Result<String, &'static str> {
        let code = raw.trim().to_ascii_uppercase();
        if code.len() != 2 || !COUNTRY_CODES.split(' ').any(|known| known == code) {
            return Err("must be a two-letter ISO 3166-1 country code");
        }
        Ok(code)
    }

    /// From Stripe's `address` object; None when Stripe holds none (no line or no country).
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let text = |name: &str| value.get(name).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        Some(Self {
            line1: text("line1")?,
            line2: text("line2"),
            city: text("city"),
            postal_code: text("postal_code"),
            state: text("state"),
            country: text("country")?,
        })
    }
}

/// A tax id to print on the customer's invoices (a VAT number, say), typed as Stripe types them:
/// `eu_vat`, `gb_vat`, `us_ein`, `ca_pst_bc`... The type's shape is checked here; whether Stripe
/// knows it, and whether the value is valid for it, Stripe decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTaxId {
    kind: String,
    value: String,
}

impl NewTaxId {
    /// `kind`: a two-letter country or region, then one or two lowercase parts (`eu_vat`,
    /// `ca_pst_bc`). `value`: 1 to 64 letters, digits, spaces and `-./`, without surrounding
    /// spaces (a pasted value is trimmed first by the caller).
    pub fn parse_type(kind: &str) -> Result<&str, &'static str> {
        let mut parts = kind.split('_');
        let region_ok = parts.next().is_some_and(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_lowercase()));
        let rest: Vec<&str> = parts.collect();
        let rest_ok = (1..=2).contains(&rest.len()) && rest.iter().all(|p| (2..=6).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase()));
        if region_ok && rest_ok { Ok(kind) } else { Err("must be a Stripe tax id type such as eu_vat, gb_vat or us_ein") }
    }

    pub fn parse_value(value: &str) -> Result<&str, &'static str> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'-' | b'.' | b'/');
        if value.is_empty() || value.len() > 64 || !value.bytes().all(allowed) || value.starts_with(' ') || value.ends_with(' ') {
            return Err("must be 1 to 64 letters, digits, spaces and - . /");
        }
        Ok(value)
    }

    pub fn new(kind: &str, value: &str) -> Result<Self, &'static str> {
        Ok(Self { kind: Self::parse_type(kind)?.to_string(), value: Self::parse_value(value)?.to_string() })
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn value(&self) -> &str {
        &self.value
    }
}

/// A tax id of a customer, as Stripe holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxId {
    /// `txi_...`
    pub id: String,
    pub kind: String,
    pub value: String,
    /// Two letters, when Stripe knows the country.
    pub country: Option<String>,
    /// Stripe's `verification.status` (`pending`, `verified`, `unverified`, `unavailable`).
    pub verification_status: Option<String>,
}

impl TaxId {
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        use serde_json::Value;
        let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
        Some(Self {
            id: text(value, "id").filter(|id| is_stripe_id(id))?,
            kind: text(value, "type")?,
            value: text(value, "value")?,
            country: text(value, "country"),
            verification_status: value.get("verification").and_then(|v| text(v, "status")),
        })
    }
}

/// A SetupIntent, for the browser to collect a payment method with Stripe.js: its
/// `client_secret` is what Stripe.js needs (it is the owner's to have, and never logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupIntent {
    pub id: String,
    pub client_secret: String,
    pub status: String,
}

/// A Stripe Checkout session for a subscription: `url` is Stripe's hosted payment page, where the
/// user pays (3-D Secure, promotion codes, wallets: Stripe's); usable until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
    pub expires_at: i64,
}

/// A Checkout session as Stripe reports it later: `open` (not paid yet), `complete` or
/// `expired`; `subscription` is the Stripe id of what the paid page made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutState {
    pub id: String,
    pub customer: Option<String>,
    pub status: String,
    pub payment_status: Option<String>,
    pub subscription: Option<String>,
    pub expires_at: Option<i64>,
}

impl CheckoutState {
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let text = |name: &str| value.get(name).and_then(serde_json::Value::as_str).map(str::to_string);
        // `subscription` is an id, or the object when expanded.
        let subscription = value.get("subscription").and_then(|s| s.as_str().or_else(|| s.get("id").and_then(serde_json::Value::as_str)));
        Some(Self {
            id: text("id").filter(|id| is_stripe_id(id))?,
            customer: text("customer"),
            status: text("status")?,
            payment_status: text("payment_status"),
            subscription: subscription.filter(|id| is_stripe_id(id)).map(str::to_string),
            expires_at: value.get("expires_at").and_then(serde_json::Value::as_i64),
        })
    }
}

/// Where Stripe's payment page sends the user: after paying (required by Stripe; it may carry
/// Stripe's `{CHECKOUT_SESSION_ID}` placeholder) and on going back (else the page has no way back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckoutUrls<'a> {
    pub success: &'a str,
    pub cancel: Option<&'a str>,
}

/// A Stripe object id as we accept it in our own URLs and query strings (`in_...`, `sub_...`).
pub fn is_stripe_id(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The value of an `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() || raw.len() > 255 {
            return Err("must be 1 to 255 characters");
        }
        if !raw.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("must be visible ASCII without spaces");
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Stripe's subscription statuses, plus `pending` (ours: the create call has not answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Pending,
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl SubscriptionStatus {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => Self::Pending,
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Paused => "paused",
        }
    }

    /// Still billing (or about to): blocks a second subscription to the same price. Must match
    /// the `live_price` column of migration 8.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Canceled | Self::IncompleteExpired)
    }
}

/// A customer as stored (the seed's normalized `customers` row plus its areas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub stripe_customer_id: Option<String>,
    pub area_ids: AreaIds,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Our mirror of one Stripe subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Ours (UUID).
    pub id: String,
    pub customer_id: String,
    pub stripe_subscription_id: Option<String>,
    pub price_id: String,
    /// Units of the price billed (Stripe's item `quantity`; as Stripe has it, even above
    /// [`Quantity::MAX`] when set there).
    pub quantity: u32,
    pub status: SubscriptionStatus,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub stripe_created: Option<i64>,
    /// `created` of the newest Stripe event applied (0: none yet).
    pub last_event_at: i64,
}

impl Subscription {
    /// Takes Stripe's state of this subscription.
    pub fn apply(&mut self, remote: &StripeSubscription) {
        self.stripe_subscription_id = Some(remote.id.clone());
        if let Some(price) = &remote.price_id {
            self.price_id = price.clone();
        }
        if let Some(quantity) = remote.quantity {
            self.quantity = quantity;
        }
        self.status = remote.status;
        self.current_period_end = remote.current_period_end;
        self.cancel_at_period_end = remote.cancel_at_period_end;
        self.stripe_created = Some(remote.created);
    }
}

/// A user's identity as auth holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub email: String,
    /// Auth's `email_verified`; false when auth does not say (and in copies cached before it did).
    #[serde(default)]
    pub email_verified: bool,
}

/// Where a profile came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileSource {
    /// Just fetched from auth.
    Auth,
    /// From the cache, within its TTL.
    Cache,
    /// From the cache, past its TTL, because auth is unavailable (`age` seconds old).
    StaleCache { age: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileLookup {
    pub profile: Profile,
    pub source: ProfileSource,
}

/// Stripe's view of a subscription (what the client reads from Stripe's JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSubscription {
    pub id: String,
    pub customer: String,
    pub status: SubscriptionStatus,
    pub price_id: Option<String>,
    /// The first item's `quantity`.
    pub quantity: Option<u32>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub created: i64,
    /// `metadata.subscription_id`: our id, when we created it.
    pub local_id: Option<String>,
    /// Read when Stripe's answer expands `latest_invoice.payment_intent`.
    pub pending_payment: Option<PendingPayment>,
    /// The first item's id (`si_...`): what a change of price names.
    pub item_id: Option<String>,
}

/// A payment of a subscription waiting for its user: 3-D Secure or another bank check
/// (`requires_action`), or another card (`requires_payment_method`). Stripe.js completes it in
/// the browser with `stripe.confirmCardPayment(client_secret)`; the webhook then brings the
/// subscription's new status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPayment {
    pub status: String,
    pub client_secret: String,
}

impl PendingPayment {
    /// From an expanded PaymentIntent, when it waits for the user.
    pub fn from_payment_intent(intent: &serde_json::Value) -> Option<Self> {
        let status = intent.get("status")?.as_str()?;
        if !matches!(status, "requires_action" | "requires_payment_method" | "requires_confirmation") {
            return None;
        }
        let client_secret = intent.get("client_secret")?.as_str().filter(|secret| !secret.is_empty())?;
        Some(Self { status: status.to_string(), client_secret: client_secret.to_string() })
    }
}

impl StripeSubscription {
    /// Reads a Stripe subscription object (pinned API version 2024-06-20: `current_period_end`
    /// on the subscription; newer versions keep it on the items, which is read as a fallback).
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        use serde_json::Value;
        let id_of = |v: Option<&Value>| -> Option<String> {
            match v? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
                _ => None,
            }
        };
        let id = value.get("id").and_then(Value::as_str).filter(|s| is_stripe_id(s))?.to_string();
        let customer = id_of(value.get("customer")).filter(|s| is_stripe_id(s))?;
        let status = SubscriptionStatus::parse(value.get("status").and_then(Value::as_str)?)?;
        let first_item = value.get("items").and_then(|i| i.get("data")).and_then(|d| d.get(0));
        let price_id = first_item
            .and_then(|item| id_of(item.get("price")).or_else(|| id_of(item.get("plan"))))
            .or_else(|| id_of(value.get("plan")));
        let current_period_end = value
            .get("current_period_end")
            .and_then(Value::as_i64)
            .or_else(|| first_item.and_then(|item| item.get("current_period_end")).and_then(Value::as_i64));
        Some(Self {
            id,
            customer,
            status,
            price_id,
            quantity: first_item.and_then(|item| item.get("quantity")).and_then(Value::as_u64).and_then(|q| u32::try_from(q).ok()),
            current_period_end,
            cancel_at_period_end: value.get("cancel_at_period_end").and_then(Value::as_bool).unwrap_or(false),
            created: value.get("created").and_then(Value::as_i64).unwrap_or(0),
            local_id: value
                .get("metadata")
                .and_then(|m| m.get("subscription_id"))
                .and_then(Value::as_str)
                .map(str::to_string),
            item_id: first_item
                .and_then(|item| item.get("id"))
                .and_then(Value::as_str)
                .filter(|id| is_stripe_id(id))
                .map(str::to_string),
            // Only a subscription whose payment is due can wait for one.
            pending_payment: value
                .get("latest_invoice")
                .and_then(|invoice| invoice.get("payment_intent"))
                .and_then(PendingPayment::from_payment_intent)
                .filter(|_| matches!(status, SubscriptionStatus::Incomplete | SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid)),
        })
    }
}

/// A Stripe customer as we look it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeCustomerRef {
    pub id: String,
    /// `metadata.user_id`.
    pub user_id: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Invoice {
    pub id: String,
    pub number: Option<String>,
    pub status: Option<String>,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: String,
    pub created: i64,
    pub hosted_invoice_url: Option<String>,
    /// Stripe's link to the invoice as a PDF (None until the invoice is finalized).
    pub invoice_pdf: Option<String>,
}

/// One invoice as Stripe holds it, with whose it is and what waits for its payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeInvoice {
    pub invoice: Invoice,
    pub customer: Option<String>,
    /// The subscription it bills, if any.
    pub subscription: Option<String>,
    /// Read when the answer expands `payment_intent`: a payment waiting for the user (3-D Secure).
    pub pending_payment: Option<PendingPayment>,
}

/// A line of an invoice preview: what one charge or credit is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    pub description: Option<String>,
    /// In the currency's smallest unit; a credit (unused time on a price left) is negative.
    pub amount: i64,
    pub currency: String,
    pub price_id: Option<String>,
    /// A charge or credit for part of a period, from a change of price.
    pub proration: bool,
    /// The service period the line pays for.
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
}

/// The invoice Stripe would make next for a subscription. Nothing is created: amounts are
/// what Stripe computes now and may move (a change, a new tax rate) before it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePreview {
    pub amount_due: i64,
    pub subtotal: i64,
    pub total: i64,
    pub currency: String,
    /// When Stripe will try to charge it; None when it will not charge automatically.
    pub next_payment_attempt: Option<i64>,
    pub lines: Vec<InvoiceLine>,
}

/// A change of a subscription's item, made or previewed: the item as it is to be, its price
/// and quantity (both always given, so Stripe never fills one in from a state we did not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemChange<'a> {
    pub item_id: &'a str,
    pub price: &'a PriceId,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePage {
    pub invoices: Vec<Invoice>,
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn area_ids_accept_distinct_positive_and_sort() {
        assert_eq!(AreaIds::parse(&[3, 1, 2]).unwrap().as_slice(), &[1, 2, 3]);
        assert_eq!(AreaIds::parse(&[]), Err(AreaIdsError::Empty));
        assert_eq!(AreaIds::parse(&[1, 0]), Err(AreaIdsError::NotPositive { index: 1 }));
        assert_eq!(AreaIds::parse(&[-5]), Err(AreaIdsError::NotPositive { index: 0 }));
        assert_eq!(AreaIds::parse(&[4, 4]), Err(AreaIdsError::Duplicate { value: 4 }));
        assert!(matches!(AreaIds::parse(&[1 << 40]), Err(AreaIdsError::TooLarge { .. })));
        let hundred: Vec<i64> = (1..=100).collect();
        assert!(AreaIds::parse(&hundred).is_ok());
        let too_many: Vec<i64> = (1..=101).collect();
        assert_eq!(AreaIds::parse(&too_many), Err(AreaIdsError::TooMany { max: 100, got: 101 }));
    }

    proptest! {
        #[test]
        fn area_ids_parse_is_exact(raw in proptest::collection::vec(-10i64..3_000_000_000i64, 0..130)) {
            let distinct: BTreeSet<i64> = raw.iter().copied().collect();
            let valid = !raw.is_empty()
                && raw.len() <= 100
                && raw.iter().all(|&v| v > 0 && v <= i64::from(i32::MAX))
                && distinct.len() == raw.len();
            match AreaIds::parse(&raw) {
                Ok(ids) => {
                    prop_assert!(valid);
                    let expected: Vec<u32> = distinct.iter().map(|&v| v as u32).collect();
                    prop_assert_eq!(ids.as_slice(), expected.as_slice());
                }
                Err(_) => prop_assert!(!valid),
            }
        }

        #[test]
        fn quantities_parse_exactly_1_to_max(raw in prop_oneof![any::<i64>(), -3i64..10_005]) {
            match Quantity::parse(raw) {
                Ok(q) => prop_assert!((1..=i64::from(Quantity::MAX)).contains(&raw) && i64::from(q.get()) == raw),
                Err(_) => prop_assert!(!(1..=i64::from(Quantity::MAX)).contains(&raw)),
            }
        }

        // Each strategy mixes values that must parse (about half) with near misses: one
        // forbidden character, or one byte too many.
        #[test]
        fn user_ids_parse_exactly_the_safe_ones(raw in prop_oneof![
            "[A-Za-z0-9_.:@-]{1,255}",
            "[A-Za-z0-9-]{0,20}[ /\t\n\u{0}\u{85}\u{3000}][A-Za-z0-9-]{0,20}",
            "[a-z]{256}",
            "[é😀a-z]{1,63}",
        ]) {
            let safe = !raw.is_empty()
                && raw.len() <= 255
                && !raw.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/');
            match UserId::parse(&raw) {
                Ok(id) => {
                    prop_assert!(safe, "{raw:?} parsed");
                    prop_assert_eq!(id.as_str(), raw.as_str());
                }
                Err(_) => prop_assert!(!safe, "{raw:?} refused"),
            }
        }

        #[test]
        fn idempotency_keys_are_exactly_visible_ascii(raw in prop_oneof![
            "[!-~]{1,255}",
            "[!-~]{0,20}[ \t\u{7f}\u{0}é][!-~]{0,20}",
            "[!-~]{256}",
        ]) {
            let visible = !raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| (0x21..=0x7e).contains(&b));
            match IdempotencyKey::parse(&raw) {
                Ok(key) => {
                    prop_assert!(visible, "{raw:?} parsed");
                    prop_assert_eq!(key.as_str(), raw.as_str());
                }
                Err(_) => prop_assert!(!visible, "{raw:?} refused"),
            }
        }
    }

    #[test]
    fn promotion_codes_are_what_a_user_types_trimmed() {
        assert_eq!(PromotionCode::parse(" LAUNCH_20-b ").unwrap().as_str(), "LAUNCH_20-b");
        let long = "A".repeat(65);
        for raw in ["", "  ", "20% OFF", "promo/1", "CÓDIGO", long.as_str()] {
            assert!(PromotionCode::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn tax_ids_have_stripes_type_shape_and_a_plain_value() {
        for kind in ["eu_vat", "gb_vat", "us_ein", "ca_pst_bc", "eu_oss_vat", "ch_uid"] {
            assert!(NewTaxId::parse_type(kind).is_ok(), "{kind}");
        }
        for kind in ["", "eu", "EU_VAT", "e_vat", "eur_vat", "eu_v", "eu_vat_x_y", "eu-vat", "eu_vatvatv", "eu__vat", "eu_vat_"] {
            assert!(NewTaxId::parse_type(kind).is_err(), "{kind}");
        }
        for value in ["DE123456789", "12-3456789", "123456789 RT0001", "CHE-123.456.788", "A/1"] {
            assert!(NewTaxId::parse_value(value).is_ok(), "{value}");
        }
        let long = "1".repeat(65);
        for value in ["", " DE1", "DE1 ", "DE1\n", "DE<1>", "DÉ1", long.as_str()] {
            assert!(NewTaxId::parse_value(value).is_err(), "{value:?}");
        }
        let read = TaxId::from_json(&serde_json::json!({"id":"txi_1","type":"eu_vat","value":"DE123456789","country":"DE",
            "verification":{"status":"pending"}})).unwrap();
        assert_eq!((read.country.as_deref(), read.verification_status.as_deref()), (Some("DE"), Some("pending")));
        assert!(TaxId::from_json(&serde_json::json!({"id":"txi/../1","type":"eu_vat","value":"x"})).is_none());
    }

    #[test]
    fn a_checkout_session_names_its_subscription_by_id_or_expanded() {
        let read = |v: serde_json::Value| CheckoutState::from_json(&v);
        let paid = read(serde_json::json!({"id": "cs_1", "customer": "cus_1", "status": "complete", "payment_status": "paid", "subscription": "sub_1", "expires_at": 5})).unwrap();
        assert_eq!((paid.subscription.as_deref(), paid.expires_at, paid.payment_status.as_deref()), (Some("sub_1"), Some(5), Some("paid")));
        let expanded = read(serde_json::json!({"id": "cs_1", "status": "complete", "subscription": {"id": "sub_2"}})).unwrap();
        assert_eq!(expanded.subscription.as_deref(), Some("sub_2"));
        assert_eq!(read(serde_json::json!({"id": "cs_1", "status": "open", "subscription": null})).unwrap().subscription, None);
        assert!(read(serde_json::json!({"id": "cs/../1", "status": "open"})).is_none());
        assert!(read(serde_json::json!({"id": "cs_1"})).is_none(), "no status");
        assert_eq!(read(serde_json::json!({"id": "cs_1", "status": "complete", "subscription": "sub/x"})).unwrap().subscription, None);
    }

    #[test]
    fn countries_are_assigned_iso_codes_in_either_case() {
        let codes: Vec<&str> = COUNTRY_CODES.split(' ').collect();
        assert_eq!(codes.len(), 250);
        assert!(codes.windows(2).all(|pair| pair[0] < pair[1]), "sorted, no repeats");
        assert!(codes.iter().all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())));
        for (raw, code) in [("de", "DE"), (" Fr ", "FR"), ("XK", "XK"), ("AD", "AD"), ("zw", "ZW")] {
            assert_eq!(BillingAddress::parse_country(raw).as_deref(), Ok(code));
        }
        // Unassigned, reserved for private use, withdrawn (Yugoslavia, Netherlands Antilles), alpha-3, not letters.
        for raw in ["ZZ", "XX", "AA", "UK", "EU", "YU", "AN", "DEU", "D", "", "4E", "D\u{0301}"] {
            assert!(BillingAddress::parse_country(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn statuses_round_trip_and_liveness_matches_the_migration() {
        for s in ["pending", "incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused"] {
            let status = SubscriptionStatus::parse(s).unwrap();
            assert_eq!(status.as_str(), s);
            let live_in_sql = ["pending", "incomplete", "trialing", "active", "past_due", "unpaid", "paused"].contains(&s);
            assert_eq!(status.is_live(), live_in_sql, "{s}");
        }
        assert_eq!(SubscriptionStatus::parse("bogus"), None);
    }
}
