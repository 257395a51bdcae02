-- Local mirror of Stripe subscriptions. `id` is ours (UUID), created before Stripe is called so
-- that Stripe's Idempotency-Key can be derived from it. `status` is Stripe's, or 'pending' while
-- the create call has not answered yet. Times are Unix seconds from Stripe: `stripe_created` is the
-- subscription's `created`, `last_event_at` the `created` of the newest event applied, which keeps
-- reordered webhooks from moving a subscription backwards.
--
-- One live subscription per (customer, price): `live_price` is the price while the subscription
-- is live and NULL once it has ended; a UNIQUE key over it (NULLs never collide) turns a double
-- click or a retried request into a 409 instead of a second subscription.
CREATE TABLE subscriptions (
    id CHAR(36) NOT NULL,
    customer_id VARCHAR(255) NOT NULL,
    stripe_subscription_id VARCHAR(255) NULL,
    price_id VARCHAR(255) NOT NULL,
    status VARCHAR(32) NOT NULL,
    current_period_end BIGINT NULL,
    cancel_at_period_end TINYINT NOT NULL DEFAULT 0,
    stripe_created BIGINT NULL,
    last_event_at BIGINT NOT NULL DEFAULT 0,
    live_price VARCHAR(255) GENERATED ALWAYS AS (
        CASE WHEN status IN ('pending', 'incomplete', 'trialing', 'active', 'past_due', 'unpaid', 'paused')
             THEN price_id ELSE NULL END) STORED,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_subscriptions_stripe_id (stripe_subscription_id),
    UNIQUE KEY uq_subscriptions_live_price (customer_id, live_price),
    CONSTRAINT fk_subscriptions_customer FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
