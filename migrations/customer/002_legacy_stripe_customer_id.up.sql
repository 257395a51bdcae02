-- Legacy: the Stripe customer of each customer, looked up by the billing webhooks.
ALTER TABLE customers
    ADD COLUMN stripe_customer_id VARCHAR(255) NULL AFTER email_encrypted,
    ADD INDEX idx_stripe_customer (stripe_customer_id);
