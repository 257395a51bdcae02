-- A tamper-evident audit log: `admin audit seal` (run by the operator, e.g. every few minutes)
-- chains every audit row older than a few minutes to the one before it, in id order:
-- `seal` = HMAC-SHA-256(key, `seal_prev` || the row's columns), `seal_prev` = the previous row's
-- seal, with a key the database does not hold. A sealed row changed, removed from the middle or
-- inserted among sealed rows, or sealed rows cut from the end, no longer verify (`admin audit
-- verify`). The app never reads or writes these columns (`admin grants` lets its user insert
-- every column of audit_log but these two) and gets no grant on `audit_seal`, the chain's head:
-- one row, under the key's MAC but for the genesis head written here. NULL until sealed.
ALTER TABLE audit_log
    ADD COLUMN seal_prev CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN seal CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL;

CREATE TABLE audit_seal (
    id TINYINT UNSIGNED NOT NULL,
    sealed_through BIGINT UNSIGNED NOT NULL,
    head CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    rows_sealed BIGINT UNSIGNED NOT NULL,
    sealed_at BIGINT NOT NULL,
    mac CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

INSERT INTO audit_seal (id, sealed_through, head, rows_sealed, sealed_at, mac) VALUES (1, 0, REPEAT('0', 64), 0, 0, '');
