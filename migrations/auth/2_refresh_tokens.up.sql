-- Refresh tokens: opaque 256-bit values, stored only as SHA-256 hex. Each sign-in starts a
-- family; every refresh marks the presented token rotated and adds its successor (parent_hash
-- is the rotation chain). Presenting a rotated token after the grace window revokes the family.
-- Times are Unix seconds (signed, so differences never underflow). Deleting a user deletes its
-- families and their tokens.
CREATE TABLE refresh_token_families (
    id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT NULL,
    revoked_reason VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    PRIMARY KEY (id),
    KEY idx_refresh_token_families_user (user_id),
    CONSTRAINT fk_refresh_token_families_user FOREIGN KEY (user_id)
        REFERENCES client_auth (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE refresh_tokens (
    token_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    family_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    parent_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    rotated_at BIGINT NULL,
    PRIMARY KEY (token_hash),
    KEY idx_refresh_tokens_family (family_id),
    KEY idx_refresh_tokens_expires (expires_at),
    CONSTRAINT fk_refresh_tokens_family FOREIGN KEY (family_id)
        REFERENCES refresh_token_families (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
