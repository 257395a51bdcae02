-- Idempotency-Key of our own write API, per caller. `request_hash` is SHA-256 over method, path and
-- the canonical body: the same key with another request is refused (422). The first response is
-- kept for 24 h (`created_at`, Unix seconds) and replayed; 5xx answers are not kept.
CREATE TABLE idempotency_keys (
    principal VARCHAR(255) NOT NULL,
    idem_key VARCHAR(255) NOT NULL,
    request_hash CHAR(64) NOT NULL,
    state VARCHAR(16) NOT NULL,
    response_status INT NULL,
    response_content_type VARCHAR(100) NULL,
    response_body MEDIUMTEXT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (principal, idem_key),
    KEY idx_idempotency_keys_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
