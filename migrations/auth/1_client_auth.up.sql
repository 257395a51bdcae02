-- Identity: the seed's client_auth table, plus what the seed's own text requires but its DDL
-- forgets.
--
-- * password_hash: argon2id PHC string (m=19456, t=2, p=1). NULL for users backfilled from the
--   legacy customer table, who have no password yet; must_reset_password marks them (they cannot
--   sign in until they set one).
-- * email_hash: lowercase hex HMAC-SHA-256 of the normalized email under a key derived from
--   encryption_key (the "blind index"). It is what login looks up and what makes an email unique.
--
-- The seed's INDEX idx_email_encrypted (email_encrypted(255)) is deliberately absent: emails are
-- sealed with AES-256-GCM under a fresh random nonce each time, so the same address never
-- encrypts to the same text twice. An index (or a uniqueness check) on email_encrypted can
-- therefore never find a user by email nor stop a duplicate; the UNIQUE blind index does both.
--
-- id is binary-collated: ids are compared exactly (UUIDv7 for new users, legacy ids kept).
CREATE TABLE client_auth (
    id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    name VARCHAR(255) NOT NULL,
    email_encrypted TEXT NOT NULL,
    email_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    password_hash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    must_reset_password TINYINT(1) NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    CONSTRAINT uq_client_auth_email_hash UNIQUE (email_hash)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
