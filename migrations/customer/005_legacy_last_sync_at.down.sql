ALTER TABLE customers
    DROP COLUMN last_sync_at;
