-- Rollback of migration 6: re-add the legacy columns exactly as versions 1-5 defined them (the
-- seed's rollback gave `name` a DEFAULT '' the legacy table never had), portable to MySQL 8.0 (a
-- TEXT column cannot take a literal default there): added nullable, set to '', made NOT NULL.
-- `updated_at = updated_at` keeps each row's timestamp (no ON UPDATE bump).
--
-- The seed's rollback stops here and loses every name and email. `admin migrate down` (issue 5,
-- admin/src/legacy.rs) does more around this file: before it runs, it refuses unless every
-- customer has a readable record in auth's client_auth (or --allow-data-loss); right after, it
-- fills name and email_encrypted from client_auth in batches, sealed in auth's format, so a
-- rolled-back customer service reads them. A fill cut short is finished by running
-- `admin migrate down --service customer --to 5` again. See docs/upgrade.md.
ALTER TABLE customers
    ADD COLUMN name VARCHAR(256) NULL AFTER id,
    ADD COLUMN email_encrypted TEXT NULL AFTER name,
    ADD COLUMN sync_version INT DEFAULT 1,
    ADD COLUMN last_sync_at TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    ADD INDEX idx_sync_version (sync_version);
UPDATE customers SET name = '', email_encrypted = '', updated_at = updated_at WHERE email_encrypted IS NULL;
ALTER TABLE customers
    MODIFY COLUMN name VARCHAR(256) NOT NULL,
    MODIFY COLUMN email_encrypted TEXT NOT NULL;
