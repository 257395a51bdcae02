-- Password-reset tokens: opaque 256-bit values a trusted service (the operator's mailer) asks
-- for and emails; stored only as SHA-256 hex. One live token per user (issuing another deletes
-- the older ones); using one deletes it, so each works once. Times are Unix seconds. Deleting a
-- user deletes its tokens; `admin purge` deletes expired ones.
CREATE TABLE password_reset_tokens (
    token_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (token_hash),
    KEY idx_password_reset_tokens_user (user_id),
    KEY idx_password_reset_tokens_expires (expires_at),
    CONSTRAINT fk_password_reset_tokens_user FOREIGN KEY (user_id)
        REFERENCES client_auth (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
