-- Password checks in flight. A login (or a change confirmed with the password) adds its row
-- here before it checks the password and deletes it after; the throttle counts the rows ahead of
-- it (smaller id) with the failures already recorded in login_throttle. Counting a check before
-- it runs keeps concurrent guesses within the limit: a burst of guesses that each read the
-- failures before any had failed was otherwise checked in full. A row whose delete never came
-- (its instance died) stops counting after 60 s and is removed by the next delete.
-- started_at is Unix seconds; the keys are login_throttle's subjects.
CREATE TABLE login_checks (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    account_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    address_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    started_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    KEY idx_login_checks_account (account_key, id),
    KEY idx_login_checks_address (address_key, id),
    KEY idx_login_checks_started (started_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
