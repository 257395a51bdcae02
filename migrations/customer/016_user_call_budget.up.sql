-- Requests each user made this minute to the routes that may call Stripe (window_start: Unix
-- seconds, a multiple of 60), shared by every instance. Stripe limits the whole account's
-- request rate; without a budget per user, one account's script could spend it and leave every
-- other customer's billing answering 503. Keyed by the auth user id (a user need not be a
-- customer yet: `POST /customers` counts too), so no foreign key. One row per user, reused each
-- minute; `admin purge` deletes the rows of users idle for `--older-than-days`.
CREATE TABLE user_call_budget (
    user_id VARCHAR(255) NOT NULL,
    window_start BIGINT NOT NULL,
    calls BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
