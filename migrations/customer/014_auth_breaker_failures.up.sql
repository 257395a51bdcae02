-- The auth circuit breaker's consecutive failures, counted where every instance sees them with an
-- atomic increment. The breaker's state (open until, probe) stays in key-value, which every
-- request reads; key-value has no increment, and counting there (read, add one, write) let
-- concurrent failures read the same count: a burst of 20 failures counted about one, so a purely
-- concurrent burst never opened the breaker. A failure more than 60 s after the last one starts
-- a new count (times are Unix seconds); a success deletes the row.
CREATE TABLE auth_breaker_failures (
    breaker VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    failures INT UNSIGNED NOT NULL,
    last_failure_at BIGINT NOT NULL,
    PRIMARY KEY (breaker)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
