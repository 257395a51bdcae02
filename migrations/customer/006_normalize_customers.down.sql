-- Rollback of migration 6: re-add the legacy columns (the seed's rollback), portable to MySQL 8.0
-- (a TEXT column cannot take a literal default there, so it is added nullable, filled, then made
-- NOT NULL).
--
-- HOOK (issue 5): this re-adds the columns empty, like the seed. The migrations issue makes `down`
-- repopulate name and email_encrypted from auth's client_auth (in auth's encrypted format) between
-- the ADD and the NOT NULL below; until then a rolled-back database has '' for both.
ALTER TABLE customers
    ADD COLUMN name VARCHAR(256) NOT NULL DEFAULT '' AFTER id,
    ADD COLUMN email_encrypted TEXT NULL AFTER name,
    ADD COLUMN sync_version INT DEFAULT 1,
    ADD COLUMN last_sync_at TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    ADD INDEX idx_sync_version (sync_version);
UPDATE customers SET email_encrypted = '' WHERE email_encrypted IS NULL;
ALTER TABLE customers MODIFY COLUMN email_encrypted TEXT NOT NULL;
