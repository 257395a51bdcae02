-- Legacy schema (before the normalization of migration 6), recreated so that teams still running it
-- have a supported upgrade path. The customer service kept its own copy of the user's name and
-- (encrypted) email here.
CREATE TABLE customers (
    id VARCHAR(255) NOT NULL,
    name VARCHAR(256) NOT NULL,
    email_encrypted TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
