-- Legacy: optimistic version of the copied identity, bumped by the auth -> customer sync.
ALTER TABLE customers
    ADD COLUMN sync_version INT DEFAULT 1,
    ADD INDEX idx_sync_version (sync_version);
