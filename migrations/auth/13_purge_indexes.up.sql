-- Indexes for `admin purge`, whose batched deletes (`DELETE … WHERE <column> < cutoff LIMIT n`)
-- otherwise walk the primary key from its start in every batch, locking every row and gap they
-- pass until the statement ends (REPEATABLE READ), and the last batch of each rule scans the
-- whole table. With these, each batch reads only rows past the cutoff. Adding a secondary index
-- is online on MySQL 8.0 and MariaDB 10.11 (in place, reads and writes go on).
ALTER TABLE refresh_token_families ADD KEY idx_refresh_token_families_created (created_at);
ALTER TABLE audit_log ADD KEY idx_audit_log_occurred (occurred_at);
