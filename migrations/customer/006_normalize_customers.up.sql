-- Migration 6 (the seed's): normalize `customers`. Name and email now live only in auth's
-- `client_auth`; the customer service keeps billing data.
--
-- The seed wrote this with IF EXISTS on each DROP of a column or index, which MySQL 8.0 does
-- not have. Here it is one ALTER that runs on MySQL 8.0 and MariaDB 10.11: the index goes first
-- (dropping sync_version would drop it implicitly, and a later DROP INDEX would then fail).
--
-- Upgrading a database that holds customers: name and email are lost here unless auth already
-- holds them. The migrations issue (issue 5) adds the guard (`admin backfill` + `admin verify`
-- before this step, and a refusal to run while unresolved rows remain); see docs/customer.md.
ALTER TABLE customers
    DROP INDEX idx_sync_version,
    DROP COLUMN name,
    DROP COLUMN email_encrypted,
    DROP COLUMN sync_version,
    DROP COLUMN last_sync_at;
