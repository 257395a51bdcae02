-- A customer being created: claimed (lease) before Stripe is called, deleted in the transaction that
-- inserts the customer. It makes concurrent creates for one user wait their turn (409), and lets a
-- create interrupted between Stripe and the database resume with the same Stripe Idempotency-Key
-- (`attempt` is part of that key; it moves on only after Stripe was searched for the customer).
CREATE TABLE customer_provisioning (
    customer_id VARCHAR(255) NOT NULL,
    attempt INT NOT NULL DEFAULT 1,
    lease_until BIGINT NOT NULL,
    last_error VARCHAR(255) NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (customer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
