-- The webhook inbox: one row per Stripe event id, written in the same transaction that applies the
-- event. A redelivered event hits the primary key and is acknowledged without being applied again;
-- an event whose processing failed leaves no row (rolled back), so Stripe's retry applies it.
CREATE TABLE stripe_events (
    id VARCHAR(255) NOT NULL,
    type VARCHAR(255) NOT NULL,
    stripe_created BIGINT NOT NULL,
    object_id VARCHAR(255) NULL,
    outcome VARCHAR(32) NOT NULL,
    received_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    KEY idx_stripe_events_object (object_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
