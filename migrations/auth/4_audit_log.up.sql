-- Security audit trail: registrations, logins (success and failure with the reason), throttling,
-- refresh-token reuse, profile/email/password changes, deletions and every read of a profile by
-- a service. Never a password, a token or a plaintext email: an unknown email appears only as
-- its blind index (email_hash). No foreign key: the trail outlives deleted users.
CREATE TABLE audit_log (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    occurred_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    event VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    success TINYINT(1) NOT NULL,
    reason VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    actor VARCHAR(300) NOT NULL,
    subject VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    email_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    client_addr VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    detail TEXT NULL,
    PRIMARY KEY (id),
    KEY idx_audit_log_subject (subject, occurred_at),
    KEY idx_audit_log_event (event, occurred_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
