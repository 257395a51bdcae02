-- What Stripe was last told of each customer's name and email. Auth owns both; Stripe keeps its own
-- copy on the customer, which it prints on invoices and mails receipts to, so a name or email
-- changed at auth must reach Stripe too. Customer holds no name or email: `profile_digest` is an
-- HMAC-SHA-256 of the pair keyed with our Stripe secret key (hex), enough to tell that auth's
-- answer differs from what Stripe has and nothing to whoever reads this table. A customer without a
-- row (created before this migration) is synced once, at the next fresh read of its profile.
-- `synced_at` is Unix seconds.
CREATE TABLE stripe_profile_sync (
    customer_id VARCHAR(255) NOT NULL,
    profile_digest CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    synced_at BIGINT NOT NULL,
    PRIMARY KEY (customer_id),
    CONSTRAINT fk_stripe_profile_sync_customer FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
