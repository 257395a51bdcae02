-- Who did what to which customer: API writes, applied webhooks, cross-service reads of profiles.
-- Never a secret, token or email.
CREATE TABLE audit_log (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    occurred_at BIGINT NOT NULL,
    actor VARCHAR(255) NOT NULL,
    action VARCHAR(64) NOT NULL,
    subject VARCHAR(255) NULL,
    detail VARCHAR(1024) NULL,
    PRIMARY KEY (id),
    KEY idx_audit_log_subject (subject, occurred_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
