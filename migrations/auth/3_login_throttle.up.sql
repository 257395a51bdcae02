-- Failed-login counters, shared by every instance. scope 'account' is keyed by the email's
-- blind index (so unknown emails are throttled exactly like known ones) and counts consecutive
-- failures, each within the window of the previous one; a success deletes it. scope 'address'
-- is keyed by the client IP and counts failures in a fixed window from window_started_at.
-- Times are Unix seconds.
CREATE TABLE login_throttle (
    scope VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    subject VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    failures INT UNSIGNED NOT NULL,
    window_started_at BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    PRIMARY KEY (scope, subject),
    KEY idx_login_throttle_last_failure (last_failure_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
