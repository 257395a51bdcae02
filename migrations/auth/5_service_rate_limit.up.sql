-- Calls per calling service in the current one-minute window (window_start: Unix seconds,
-- a multiple of 60), shared by every instance.
CREATE TABLE service_rate_limit (
    service VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    window_start BIGINT NOT NULL,
    calls BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (service)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
