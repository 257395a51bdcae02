ALTER TABLE customers
    DROP INDEX idx_sync_version,
    DROP COLUMN sync_version;
