-- Email verification. `email_verified_at` (Unix seconds; NULL: not verified) is set when the
-- account's owner uses a token the operator's mailer sent to the address, and cleared when the
-- email changes. BIGINT like every time column auth reads: Spin cannot read TIMESTAMP columns.
-- Existing accounts start unverified.
ALTER TABLE client_auth ADD COLUMN email_verified_at BIGINT NULL;

-- Email-verification tokens: as password_reset_tokens (SHA-256 hex of opaque 256-bit values,
-- one live token per user, each works once), valid a day. An email change deletes them;
-- deleting a user deletes its tokens; `admin purge` deletes expired ones.
CREATE TABLE email_verification_tokens (
    token_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (token_hash),
    KEY idx_email_verification_tokens_user (user_id),
    KEY idx_email_verification_tokens_expires (expires_at),
    CONSTRAINT fk_email_verification_tokens_user FOREIGN KEY (user_id)
        REFERENCES client_auth (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
