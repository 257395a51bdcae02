ALTER TABLE customers
    DROP INDEX idx_stripe_customer,
    DROP COLUMN stripe_customer_id;
