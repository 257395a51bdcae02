"""Run localstripe bound to one address (127.0.0.1 by default), speaking the live API we use.

localstripe's own `localstripe --port N` has no bind option: it listens on [::] (every
interface, IPv4 and IPv6), and it saves its state to /tmp/localstripe.pickle, a file shared by
every checkout on the machine. This wrapper starts the same aiohttp app on the address given,
and keeps state in memory unless --state-file is passed. Used by scripts/stack.sh and by the
customer integration tests (one private instance per test).

It also patches localstripe at run time (the installed package is never modified) so that it
accepts what the live Stripe API accepts for our calls:

* Prices: `POST /v1/prices` (unit_amount, currency, recurring[interval], product or
  product_data[name]), `GET /v1/prices/{id}` and `GET /v1/prices`. localstripe only knows the
  legacy Plan; a price is stored as a plan whose id starts with `price_`.
* Subscriptions take `items[N][price]` (live) as well as `items[N][plan]` (legacy), and
  `payment_behavior=default_incomplete`; subscription items are exported with `price`. One
  created with `trial_period_days` (or `trial_end`) starts `trialing`, its period ending with the
  trial, as on Stripe; `trial_settings[end_behavior][missing_payment_method]` is checked and kept. An
  unknown price, on create or update, is a 400 `resource_missing` naming `items[N][price]`, as on
  Stripe (localstripe's own answer is a 404 "Not Found" without a `param`). An update sends
  `customer.subscription.updated`, as Stripe does (localstripe sent no event for it).
* Promotion codes: `POST /v1/promotion_codes` (coupon, code, active, max_redemptions) and
  `GET /v1/promotion_codes?code=&active=` (the code compared without regard to case), and a
  subscription created with `discounts[0][promotion_code]` (an unknown, inactive or used-up one is
  a 400 naming that param). Its coupon discounts the subscription's invoices: `percent_off` of
  the subtotal or `amount_off`, on every invoice (`forever`, and `repeating`, whose months are
  not counted) or the first only (`once`). localstripe applied no discount at all.
* Invoices are exported with `number` (`<customer's prefix>-0001`, …, once not a draft, as
  Stripe numbers finalized invoices), `hosted_invoice_url` and `invoice_pdf` (null for a draft),
  their lines with `price`.
* `POST /v1/invoices/create_preview` takes `subscription_details[items][N][price]` (an unknown
  one is a 400 naming that param), and has no invoice to preview for a subscription that is
  canceled or set to cancel at its period's end (404 `invoice_upcoming_none`), as on Stripe.
  localstripe's proration is cruder than Stripe's: a change credits the whole previous invoice
  ("Unused time") and charges the whole new price.
* `POST /v1/billing_portal/sessions` (customer, return_url) answers a customer-portal session
  with its `url`, as Stripe does; a missing `return_url` is refused as Stripe refuses it when the
  portal has no default. The portal page itself is not served.
* Checkout sessions in subscription mode (`POST`/`GET /v1/checkout/sessions`,
  `GET /v1/checkout/sessions/{id}`, `POST /v1/checkout/sessions/{id}/expire`): a missing
  `success_url`, an unknown customer, price (`line_items[0][price]`) or promotion code are
  refused as Stripe refuses them, and a session no longer open cannot be expired. The page is not
  served: `POST /_checkout/{id}/complete` (form: `card_number`, 4242… by default) does what it
  does when the user pays (the card attached and made the customer's default, the subscription
  made from the session's items, discounts and `subscription_data`, then
  `checkout.session.completed`).
* Customer tax ids (`POST`/`GET /v1/customers/{id}/tax_ids`) take the common types of live
  Stripe (localstripe knew four) and refuse as Stripe does, naming the param: an unknown `type`
  (400, `param: type`), a value that does not fit its type (400 `tax_id_invalid`,
  `param: value`; the formats checked are simpler than Stripe's). The list takes `limit`. A new
  tax id's verification is `pending` (a value containing 111111111 is `unverified`, as in
  Stripe's test mode).
* `POST /v1/invoices/{id}/pay` whose charge is declined answers 402 `card_declined`, and one
  whose payment waits for 3-D Secure 402 `invoice_payment_intent_requires_action`, as Stripe
  does (localstripe answered 200 with the invoice still open).
* A SetupIntent for a customer that succeeds attaches its payment method to that customer.
* Detaching a customer's default payment method unsets the default, as on Stripe.
* `Idempotency-Key` on POST: the first answer (status and body, 500s included) is kept 24 h and
  replayed with `Idempotent-Replayed: true`; the same key with other parameters is a 400
  `idempotency_error`, as on Stripe.
* Fault injection for tests: `POST /_config/faults` with JSON
  `{"method": "POST", "path": "/v1/customers", "status": 500, "times": 1, "when": "before"}`
  answers the next `times` matching requests with `status`; `when` = "before" (the request is
  not processed) or "after" (processed, then the answer is replaced: a lost response).
  `DELETE /_config/faults` clears them; `GET /_config/faults` lists what is left.
  `"delay": <seconds>` waits that long first (a slow Stripe); with `"status"` omitted or 0 the
  request then goes on normally.
* `GET /_config/requests`: every /v1 request seen, in order, as {method, path, idempotency_key,
  status} (tests check that retries reuse one key); `DELETE` clears the list.
"""

import argparse
import asyncio
import hashlib
import json
import logging
import pickle
import re
import socket
import time

from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError
from localstripe.webhooks import schedule_webhook

IDEMPOTENCY_TTL = 24 * 3600


def _refuse_unknown_prices(items):
    """Live Stripe's answer to a subscription item whose price does not exist."""
    if not isinstance(items, list):
        return
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        for field in ("price", "plan"):
            price = item.get(field)
            if isinstance(price, str) and resources.store.get("plan:" + price) is None:
                raise UserError(400, "No such price: '%s'" % price,
                                {"code": "resource_missing",
                                 "param": "items[%d][%s]" % (index, field)})


def _price_to_plan(items):
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and "price" in item:
                price = item.pop("price")
                item.setdefault("plan", price)
    return items


def _price_export(plan):
    return {
        "id": plan.id,
        "object": "price",
        "active": plan.active,
        "billing_scheme": plan.billing_scheme,
        "created": plan.created,
        "currency": plan.currency,
        "livemode": False,
        "lookup_key": None,
        "metadata": plan.metadata,
        "nickname": plan.nickname,
        "product": plan.product,
        "recurring": {
            "interval": plan.interval,
            "interval_count": plan.interval_count,
            "usage_type": plan.usage_type,
        },
        "type": "recurring",
        "unit_amount": plan.amount,
    }


def patch_live_api():
    Subscription = resources.Subscription
    SubscriptionItem = resources.SubscriptionItem
    Invoice = resources.Invoice

    original_init = Subscription.__init__

    def init(self, *args, items=None, payment_behavior="allow_incomplete", trial_settings=None, discounts=None, **kwargs):
        if payment_behavior == "default_incomplete":
            payment_behavior = "allow_incomplete"
        _refuse_unknown_prices(items)
        promotion = _redeemable_promotion_code(discounts)
        # Set before localstripe's own __init__, which makes the first invoice.
        self._coupon = resources.Coupon._api_retrieve(promotion["coupon"]["id"]) if promotion else None
        self._coupon_first_invoice = None
        end = trial_settings.get("end_behavior") if isinstance(trial_settings, dict) else None
        behavior = end.get("missing_payment_method") if isinstance(end, dict) else None
        if trial_settings is not None and behavior not in ("cancel", "create_invoice", "pause"):
            raise UserError(400, "Invalid trial_settings[end_behavior][missing_payment_method]",
                            {"param": "trial_settings[end_behavior][missing_payment_method]"})
        original_init(self, *args, items=_price_to_plan(items),
                      payment_behavior=payment_behavior, **kwargs)
        if promotion is not None:
            promotion["times_redeemed"] += 1
            self._coupon_first_invoice = self.latest_invoice
            self.discount = {"object": "discount", "coupon": self._coupon._export(), "promotion_code": promotion["id"]}
        # Live Stripe starts a subscription with a trial `trialing`, its first period being the
        # trial; localstripe left it `incomplete`, with the plan's period.
        days = self.trial_period_days
        if self.trial_end is not None or days is not None:
            self.trial_start = self.start_date
            if self.trial_end is None:
                self.trial_end = self.start_date + days * 86400
            self.status = "trialing"
        self.trial_settings = {"end_behavior": {"missing_payment_method": behavior or "create_invoice"}}

    Subscription.__init__ = init

    original_period_end = Subscription.current_period_end

    def period_end(self):
        if self.status == "trialing" and self.trial_end is not None:
            return self.trial_end
        return original_period_end.fget(self)

    Subscription.current_period_end = property(period_end)

    original_update = Subscription._update

    def update(self, items=None, **kwargs):
        _refuse_unknown_prices(items)
        result = original_update(self, items=_price_to_plan(items), **kwargs)
        schedule_webhook(resources.Event("customer.subscription.updated", self))
        return result

    Subscription._update = update

    original_item_export = SubscriptionItem._export

    def item_export(self, expand=None):
        exported = original_item_export(self, expand=expand)
        exported["price"] = _price_export(self.plan)
        return exported

    SubscriptionItem._export = item_export

    original_total = Invoice.total

    def total(self):
        amount = original_total.fget(self)
        sub = resources.store.get("subscription:" + self.subscription) if self.subscription else None
        coupon = getattr(sub, "_coupon", None)
        first = getattr(sub, "_coupon_first_invoice", None)
        if coupon is None or (coupon.duration == "once" and first is not None and first != self.id):
            return amount
        off = coupon.amount_off if coupon.amount_off is not None else round(self.subtotal * coupon.percent_off / 100)
        return max(0, amount - off)

    Invoice.total = property(total)

    original_invoice_export = Invoice._export

    def invoice_export(self, expand=None):
        exported = original_invoice_export(self, expand=expand)
        # Stripe numbers an invoice when it is finalized, `<customer's prefix>-<sequence>`, and
        # gives it a hosted page and a PDF; a draft has none of them.
        if exported.get("status") != "draft" and getattr(self, "_number", None) is None:
            prefix = (self.customer or "cus_X")[-8:].upper()
            sequence = 1 + sum(1 for k, v in resources.store.items() if k.startswith("invoice:")
                               and v.customer == self.customer and getattr(v, "_number", None) is not None)
            self._number = "%s-%04d" % (prefix, sequence)
        number = getattr(self, "_number", None)
        exported.setdefault("number", number)
        exported.setdefault("hosted_invoice_url", number and "https://invoice.stripe.com/i/acct_local/test_" + self.id)
        exported.setdefault("invoice_pdf", number and "https://pay.stripe.com/invoice/acct_local/test_%s/pdf" % self.id)
        return exported

    Invoice._export = invoice_export

    original_invoice_list = Invoice._api_list_all

    def invoice_list(cls, url, starting_after=None, **kwargs):
        # Live Stripe refuses a cursor that names no invoice; localstripe ignored it.
        if starting_after is not None and resources.store.get("invoice:" + str(starting_after)) is None:
            raise UserError(400, "No such invoice: '%s'" % starting_after,
                            {"code": "resource_missing", "param": "starting_after"})
        return original_invoice_list(url, starting_after=starting_after, **kwargs)

    Invoice._api_list_all = classmethod(invoice_list)

    original_next_invoice = Invoice._get_next_invoice

    def next_invoice(cls, customer=None, subscription=None, subscription_items=None, upcoming=False, **kwargs):
        # `POST /v1/invoices/create_preview` names the items' prices under
        # `subscription_details[items][N][price]`; localstripe only knew `plan`, and refused the
        # unknown one with a 404 without a param.
        if isinstance(subscription_items, list):
            for index, item in enumerate(subscription_items):
                price = item.get("price") if isinstance(item, dict) else None
                if isinstance(price, str) and resources.store.get("plan:" + price) is None:
                    raise UserError(400, "No such price: '%s'" % price,
                                    {"code": "resource_missing",
                                     "param": "subscription_details[items][%d][price]" % index})
            subscription_items = _price_to_plan(subscription_items)
        # Live Stripe has no next invoice for a subscription that ends first; localstripe
        # previewed one.
        sub = resources.store.get("subscription:" + subscription) if isinstance(subscription, str) else None
        if upcoming and sub is not None and (sub.status == "canceled" or sub.cancel_at_period_end):
            raise UserError(404, "No upcoming invoices for customer", {"code": "invoice_upcoming_none"})
        return original_next_invoice.__func__(cls, customer=customer, subscription=subscription,
                                               subscription_items=subscription_items, upcoming=upcoming, **kwargs)

    Invoice._get_next_invoice = classmethod(next_invoice)

    InvoiceLineItem = resources.InvoiceLineItem
    original_line_export = InvoiceLineItem._export

    def line_export(self, expand=None):
        exported = original_line_export(self, expand=expand)
        plan = self.plan
        if isinstance(plan, str):
            plan = resources.store.get("plan:" + plan)
        exported["price"] = _price_export(plan) if isinstance(plan, resources.Plan) else None
        return exported

    InvoiceLineItem._export = line_export

    SetupIntent = resources.SetupIntent
    original_attach_pm = SetupIntent._attach_pm

    def attach_pm(self, pm):
        # Live Stripe attaches the payment method of a SetupIntent that succeeds to the
        # intent's customer; localstripe only recorded it on the intent.
        original_attach_pm(self, pm)
        if self.status == "succeeded" and self.customer:
            pm.customer = self.customer

    SetupIntent._attach_pm = attach_pm



def _redeemable_promotion_code(discounts):
    """The promotion code a subscription's `discounts` names, refused as Stripe refuses it."""
    if discounts is None:
        return None
    param = "discounts[0][promotion_code]"
    first = discounts[0] if isinstance(discounts, list) and discounts and isinstance(discounts[0], dict) else None
    promo_id = first.get("promotion_code") if first else None
    promotion = resources.store.get("promotion_code:" + promo_id) if isinstance(promo_id, str) else None
    if promotion is None:
        raise UserError(400, "No such promotion code: '%s'" % promo_id, {"code": "resource_missing", "param": param})
    used_up = promotion["max_redemptions"] is not None and promotion["times_redeemed"] >= promotion["max_redemptions"]
    if not promotion["active"] or used_up:
        raise UserError(400, "This promotion code cannot be redeemed.", {"param": param})
    return promotion


async def create_promotion_code(request):
    data = await server.get_post_data(request) or {}
    coupon = resources.Coupon._api_retrieve(str(data.get("coupon")))
    code = data.get("code")
    if not isinstance(code, str) or not code:
        raise UserError(400, "Missing required param: code.", {"param": "code"})
    max_redemptions = data.get("max_redemptions")
    promotion = {
        "id": "promo_" + resources.random_id(14),
        "object": "promotion_code",
        "code": code,
        "coupon": coupon._export(),
        "active": str(data.get("active", "true")).lower() != "false",
        "max_redemptions": int(max_redemptions) if max_redemptions is not None else None,
        "times_redeemed": 0,
        "created": int(time.time()),
        "livemode": False,
    }
    resources.store["promotion_code:" + promotion["id"]] = promotion
    return server.json_response(promotion)


async def list_promotion_codes(request):
    code = request.query.get("code")
    active = request.query.get("active")
    found = [p for key, p in resources.store.items() if key.startswith("promotion_code:")
             and (code is None or p["code"].lower() == code.lower())
             and (active is None or p["active"] == (active == "true"))]
    limit = int(request.query.get("limit", "10"))
    return server.json_response({"object": "list", "url": "/v1/promotion_codes", "has_more": len(found) > limit,
                                 "data": found[:limit]})


async def create_price(request):
    data = await server.get_post_data(request) or {}
    recurring = data.get("recurring") or {}
    product = data.get("product")
    if product is None and isinstance(data.get("product_data"), dict):
        product = {"name": data["product_data"].get("name", "Product")}
    try:
        plan = resources.Plan(
            id="price_" + resources.random_id(14),
            amount=data.get("unit_amount"),
            currency=data.get("currency"),
            interval=recurring.get("interval"),
            interval_count=recurring.get("interval_count", 1),
            product=product,
            nickname=data.get("nickname"),
            metadata=data.get("metadata"),
        )
    except TypeError:
        raise UserError(400, "Bad request")
    return server.json_response(_price_export(plan))


async def retrieve_price(request):
    return server.json_response(_price_export(resources.Plan._api_retrieve(request.match_info["id"])))


async def list_prices(request):
    prices = [_price_export(v) for k, v in resources.store.items()
              if k.startswith("plan:price_")]
    return server.json_response({"object": "list", "url": "/v1/prices", "has_more": False,
                                 "data": prices})


async def create_portal_session(request):
    # Stripe's customer portal: a short-lived URL of Stripe's hosted page where the customer
    # manages cards, subscriptions and invoices. localstripe has no portal; the session is
    # answered as Stripe answers it (the page itself is not served).
    data = await server.get_post_data(request) or {}
    customer = data.get("customer")
    if not isinstance(customer, str) or resources.store.get("customer:" + customer) is None:
        raise UserError(400, "No such customer: '%s'" % customer,
                        {"code": "resource_missing", "param": "customer"})
    return_url = data.get("return_url")
    if return_url is None:
        # Stripe's answer when the portal's configuration has no default return URL.
        raise UserError(400, "You must provide a return_url or set a default in the portal configuration",
                        {"param": "return_url"})
    if not isinstance(return_url, str) or not return_url.startswith(("http://", "https://")):
        raise UserError(400, "Invalid URL: return_url", {"param": "return_url"})
    session_id = "bps_" + resources.random_id(24)
    return server.json_response({
        "id": session_id, "object": "billing_portal.session", "customer": customer,
        "return_url": return_url, "created": int(time.time()), "livemode": False,
        "url": "https://billing.stripe.com/p/session/test_" + session_id,
    })


class _Exported:
    """A plain dict that localstripe's Event can carry (it calls `_export()` on its object)."""

    def __init__(self, exported):
        self._exported = exported

    def _export(self):
        return self._exported


def _page_url(data, name, required):
    url = data.get(name)
    if url is None:
        if required:
            raise UserError(400, "Missing required param: %s." % name, {"param": name})
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise UserError(400, "Not a valid URL", {"param": name})
    return url


def _checkout_session(session_id):
    session = resources.store.get("checkout_session:" + session_id)
    if session is None:
        raise UserError(404, "No such checkout.session: '%s'" % session_id, {"code": "resource_missing", "param": "session"})
    return session


def _checkout_export(session):
    return {k: v for k, v in session.items() if not k.startswith("_")}


async def create_checkout_session(request):
    # Stripe Checkout in subscription mode: a hosted page that makes the subscription once the
    # user pays. localstripe has no Checkout; sessions are kept here, refused as Stripe refuses
    # them, and `POST /_checkout/{id}/complete` does what the page does when the user pays.
    data = await server.get_post_data(request) or {}
    if data.get("mode") != "subscription":
        raise UserError(400, "Invalid mode: only subscription is modelled here", {"param": "mode"})
    customer = data.get("customer")
    if not isinstance(customer, str) or resources.store.get("customer:" + customer) is None:
        raise UserError(400, "No such customer: '%s'" % customer, {"code": "resource_missing", "param": "customer"})
    success_url = _page_url(data, "success_url", True)
    cancel_url = _page_url(data, "cancel_url", False)
    items = data.get("line_items")
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    price = first.get("price")
    if not isinstance(price, str) or resources.store.get("plan:" + price) is None:
        raise UserError(400, "No such price: '%s'" % price, {"code": "resource_missing", "param": "line_items[0][price]"})
    try:
        quantity = int(first.get("quantity", "1"))
        assert 1 <= quantity <= 999999
    except (ValueError, TypeError, AssertionError):
        raise UserError(400, "Invalid integer: %s" % first.get("quantity"), {"param": "line_items[0][quantity]"})
    _redeemable_promotion_code(data.get("discounts"))
    subscription_data = data.get("subscription_data") or {}
    now = int(time.time())
    session_id = "cs_test_" + resources.random_id(24)
    session = {
        "id": session_id, "object": "checkout.session", "mode": "subscription", "customer": customer,
        "client_reference_id": data.get("client_reference_id"), "status": "open", "payment_status": "unpaid",
        "url": "https://checkout.stripe.com/c/pay/" + session_id, "success_url": success_url,
        "cancel_url": cancel_url, "created": now, "expires_at": now + 24 * 3600, "subscription": None,
        "livemode": False,
        "_items": [{"price": price, "quantity": str(quantity)}], "_discounts": data.get("discounts"),
        "_subscription_data": subscription_data,
    }
    resources.store["checkout_session:" + session_id] = session
    return server.json_response(_checkout_export(session))


async def list_checkout_sessions(request):
    customer = request.query.get("customer")
    status = request.query.get("status")
    found = [_checkout_export(v) for k, v in resources.store.items() if k.startswith("checkout_session:")
             and (customer is None or v["customer"] == customer) and (status is None or v["status"] == status)]
    limit = int(request.query.get("limit", "10"))
    return server.json_response({"object": "list", "url": "/v1/checkout/sessions", "has_more": len(found) > limit,
                                 "data": found[:limit]})


async def retrieve_checkout_session(request):
    return server.json_response(_checkout_export(_checkout_session(request.match_info["id"])))


async def expire_checkout_session(request):
    session = _checkout_session(request.match_info["id"])
    if session["status"] != "open":
        raise UserError(400, 'Only Checkout Sessions with a status in ["open"] can be expired.')
    session["status"] = "expired"
    return server.json_response(_checkout_export(session))


async def complete_checkout_session(request):
    # What the hosted page does once the user has paid: the subscription is made with the
    # session's items, discounts and subscription_data, then `checkout.session.completed` is sent.
    session = _checkout_session(request.match_info["id"])
    if session["status"] != "open":
        raise UserError(400, "This Checkout Session is no longer open.")
    # The card typed on the page (`card_number`, Stripe's test 4242… by default): attached to the
    # customer, as the page does, and made its default, which is where localstripe charges from
    # (Stripe makes it the subscription's default_payment_method). A declined card (4000…0002)
    # is a 402 and the session stays open, as the page lets the user try another.
    data = await server.get_post_data(request) or {}
    card = {"number": data.get("card_number", "4242424242424242"), "exp_month": "12", "exp_year": "2030", "cvc": "123"}
    method = resources.PaymentMethod._api_create(type="card", card=card)
    resources.PaymentMethod._api_attach(method.id, customer=session["customer"])
    resources.Customer._api_update(session["customer"], invoice_settings={"default_payment_method": method.id})
    subscription_data = session["_subscription_data"]
    options = {key: subscription_data[key] for key in ("metadata", "trial_period_days", "trial_settings")
               if key in subscription_data}
    if session["_discounts"] is not None:
        options["discounts"] = session["_discounts"]
    items = [dict(item) for item in session["_items"]]
    subscription = resources.Subscription._api_create(customer=session["customer"], items=items, **options)
    session.update(status="complete", payment_status="paid", subscription=subscription.id)
    schedule_webhook(resources.Event("checkout.session.completed", _Exported(_checkout_export(session))))
    return server.json_response(_checkout_export(session))


@web.middleware
async def detach_middleware(request, handler):
    # Live Stripe also unsets a customer's invoice_settings.default_payment_method when that
    # payment method is detached; localstripe left the customer pointing at a detached card.
    # A middleware, because localstripe binds its detach route to the function at import.
    response = await handler(request)
    parts = request.path.split("/")
    if (request.method == "POST" and len(parts) == 5 and parts[1:3] == ["v1", "payment_methods"]
            and parts[4] == "detach" and response.status == 200):
        for key, customer in list(resources.store.items()):
            settings = getattr(customer, "invoice_settings", None) if key.startswith("customer:") else None
            if isinstance(settings, dict) and settings.get("default_payment_method") == parts[3]:
                settings["default_payment_method"] = None
    return response


# ---- Tax ids ----------------------------------------------------------------------------------

# The value formats of the live API's common tax id types (Stripe checks more, and more closely).
TAX_ID_FORMATS = {
    "eu_vat": r"[A-Z]{2}[0-9A-Z+*.]{2,13}",
    "gb_vat": r"GB[0-9]{9}([0-9]{3})?",
    "ch_vat": r"CHE-?[0-9]{3}\.?[0-9]{3}\.?[0-9]{3} ?(MWST|TVA|IVA)",
    "no_vat": r"[0-9]{9}MVA",
    "us_ein": r"[0-9]{2}-[0-9]{7}",
    "ca_bn": r"[0-9]{9}",
    "au_abn": r"[0-9]{11}",
    "nz_gst": r"[0-9]{8,9}",
    "in_gst": r"[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][0-9A-Z]Z[0-9A-Z]",
    "jp_cn": r"[0-9]{13}",
    "es_cif": r"[A-Z][0-9]{8}",
}
TAX_IDS_PATH = re.compile(r"/v1/customers/(cus_[A-Za-z0-9]+)/tax_ids")


@web.middleware
async def tax_id_middleware(request, handler):
    # Innermost, so that localstripe's error middleware answers the UserErrors raised here; a
    # middleware, because localstripe binds its tax id routes to its functions at import.
    match = TAX_IDS_PATH.fullmatch(request.path)
    if match is None or request.method not in ("GET", "POST"):
        return await handler(request)
    customer = resources.Customer._api_retrieve(match.group(1))
    if request.method == "GET":
        return server.json_response(customer.tax_ids._export())
    data = await server.get_post_data(request) or {}
    kind, value = data.get("type"), data.get("value")
    if kind not in TAX_ID_FORMATS:
        raise UserError(400, "Invalid value for type.", {"code": "parameter_invalid_string", "param": "type"})
    if not isinstance(value, str) or re.fullmatch(TAX_ID_FORMATS[kind], value) is None:
        raise UserError(400, "Invalid value for %s." % kind, {"code": "tax_id_invalid", "param": "value"})
    tax_id = resources.TaxId.__new__(resources.TaxId)
    resources.StripeObject.__init__(tax_id)
    tax_id.customer = customer.id
    tax_id.type = kind
    tax_id.value = value
    tax_id.country = value[:2] if kind == "eu_vat" else kind[:2].upper()
    status = "unverified" if "111111111" in value else "pending"
    tax_id.verification = {"status": status, "verified_name": None, "verified_address": None}
    customer.tax_ids._list.append(tax_id)
    return server.json_response(tax_id._export())


INVOICE_PAY_PATH = re.compile(r"/v1/invoices/(in_[A-Za-z0-9]+)/pay")


@web.middleware
async def invoice_pay_middleware(request, handler):
    # Innermost, as tax_id_middleware, so that the UserErrors raised here become Stripe's answers.
    response = await handler(request)
    match = INVOICE_PAY_PATH.fullmatch(request.path)
    if request.method != "POST" or match is None or response.status != 200:
        return response
    invoice = resources.store.get("invoice:" + match.group(1))
    intent = resources.store.get("payment_intent:" + invoice.payment_intent) if invoice and invoice.payment_intent else None
    if invoice is None or invoice.status != "open" or intent is None:
        return response
    if intent.status == "requires_action":
        raise UserError(402, "This payment requires additional user action before it can be completed successfully.",
                        {"code": "invoice_payment_intent_requires_action"})
    if intent.status == "requires_payment_method":
        raise UserError(402, "Your card was declined.", {"code": "card_declined", "decline_code": "generic_decline"})
    return response


# ---- Idempotency-Key --------------------------------------------------------------------------

_idempotency = {}  # key -> (fingerprint, status, body bytes, content type, stored at)


@web.middleware
async def idempotency_middleware(request, handler):
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    body = await request.read()
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.path_qs.encode() + b"\n" + body).hexdigest()
    now = time.time()
    for k in [k for k, v in _idempotency.items() if now - v[4] > IDEMPOTENCY_TTL]:
        del _idempotency[k]
    seen = _idempotency.get(key)
    if seen is not None:
        if seen[0] != fingerprint:
            return server.json_response({"error": {
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used with the same "
                           "parameters they were first used with."}}, status=400)
        response = web.Response(status=seen[1], body=seen[2], content_type=seen[3])
        response.headers["Idempotent-Replayed"] = "true"
        return response
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        logging.getLogger("aiohttp.access").exception("internal error")
        response = server.json_response(
            {"error": {"type": "api_error", "message": "An unknown error occurred"}}, status=500)
    if isinstance(response, web.Response) and response.body is not None:
        _idempotency[key] = (fingerprint, response.status, bytes(response.body),
                             response.content_type, now)
    return response


# ---- fault injection --------------------------------------------------------------------------

_faults = []


_requests = []


@web.middleware
async def request_log_middleware(request, handler):
    # Logged on arrival: a request whose client gave up (a timeout) is cancelled, yet was sent.
    entry = {"method": request.method, "path": request.path,
             "idempotency_key": request.headers.get("Idempotency-Key"), "status": None}
    if request.path.startswith("/v1/"):
        _requests.append(entry)
    response = await handler(request)
    entry["status"] = getattr(response, "status", None)
    return response


async def list_requests(request):
    return server.json_response({"requests": _requests})


async def clear_requests(request):
    _requests.clear()
    return server.json_response({"requests": _requests})


@web.middleware
async def fault_middleware(request, handler):
    for fault in _faults:
        if fault["times"] > 0 and fault["method"] == request.method and fault["path"] == request.path:
            fault["times"] -= 1
            if fault.get("delay"):
                await asyncio.sleep(float(fault["delay"]))
            if not fault.get("status", 500):
                return await handler(request)
            if fault.get("when", "before") == "after":
                await handler(request)
            return server.json_response(
                {"error": {"type": "api_error", "message": "Injected fault"}},
                status=int(fault.get("status", 500)))
    return await handler(request)


async def add_fault(request):
    fault = await request.json()
    fault.setdefault("times", 1)
    fault.setdefault("when", "before")
    _faults.append(fault)
    return server.json_response({"faults": _faults})


async def list_faults(request):
    return server.json_response({"faults": _faults})


async def clear_faults(request):
    _faults.clear()
    return server.json_response({"faults": _faults})


def install(app):
    patch_live_api()
    # Outermost first: faults see every request, then idempotency, then the detach fix-up, then
    # localstripe's own.
    app.middlewares.insert(0, detach_middleware)
    app.middlewares.insert(0, idempotency_middleware)
    app.middlewares.insert(0, fault_middleware)
    app.middlewares.insert(0, request_log_middleware)
    app.middlewares.append(tax_id_middleware)
    app.middlewares.append(invoice_pay_middleware)
    app.router.add_get("/_config/requests", list_requests)
    app.router.add_delete("/_config/requests", clear_requests)
    app.router.add_post("/_config/faults", add_fault)
    app.router.add_get("/_config/faults", list_faults)
    app.router.add_delete("/_config/faults", clear_faults)
    # Before localstripe's generic routes would see them: aiohttp matches in order, and /v1/prices
    # is not among localstripe's resources, so plain registration is enough.
    app.router.add_post("/v1/prices", create_price)
    app.router.add_get("/v1/prices/{id}", retrieve_price)
    app.router.add_get("/v1/prices", list_prices)
    app.router.add_post("/v1/billing_portal/sessions", create_portal_session)
    app.router.add_post("/v1/promotion_codes", create_promotion_code)
    app.router.add_get("/v1/promotion_codes", list_promotion_codes)
    app.router.add_post("/v1/checkout/sessions", create_checkout_session)
    app.router.add_get("/v1/checkout/sessions", list_checkout_sessions)
    app.router.add_get("/v1/checkout/sessions/{id}", retrieve_checkout_session)
    app.router.add_post("/v1/checkout/sessions/{id}/expire", expire_checkout_session)
    app.router.add_post("/_checkout/{id}/complete", complete_checkout_session)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--state-file", default=None,
                        help="persist objects here across restarts (default: memory only)")
    args = parser.parse_args()

    def load(store):
        if args.state_file is None:
            return
        try:
            with open(args.state_file, "rb") as f:
                old = pickle.load(f)
        except FileNotFoundError:
            return
        store.clear()
        store.update(old)

    def dump(store):
        if args.state_file is not None:
            with open(args.state_file, "wb") as f:
                pickle.dump(store, f, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump
    resources.store.try_load_from_disk()
    install(server.app)

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))

    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler())
    print(f"localstripe listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(server.app, sock=sock, access_log=logger, print=None)


if __name__ == "__main__":
    main()
