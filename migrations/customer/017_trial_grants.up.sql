-- Users who were given a free trial (`subscription_trial_days`), so that each gets one: the row
-- outlives the customer (leaving billing and coming back gives no second trial), hence no
-- foreign key to `customers`. Keyed by the auth user id; an erasure of the account deletes it.
CREATE TABLE trial_grants (
    customer_id VARCHAR(255) NOT NULL,
    granted_at BIGINT NOT NULL,
    days INT UNSIGNED NOT NULL,
    PRIMARY KEY (customer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
