-- Legacy: when the copied identity was last synchronised from auth.
ALTER TABLE customers
    ADD COLUMN last_sync_at TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP;
