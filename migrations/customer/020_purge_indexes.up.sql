-- Indexes for `admin purge`, whose batched deletes (`DELETE … WHERE <column> < cutoff LIMIT n`)
-- otherwise walk the primary key from its start in every batch, locking every row and gap they
-- pass until the statement ends (REPEATABLE READ): webhook inserts and per-user budget upserts
-- would wait on them. The inbox and the budgets are keyed by random ids, so purgeable rows are
-- spread through the whole table. With these, each batch reads only rows past the cutoff.
-- Adding a secondary index is online on MySQL 8.0 and MariaDB 10.11.
ALTER TABLE stripe_events ADD KEY idx_stripe_events_received (received_at);
ALTER TABLE user_call_budget ADD KEY idx_user_call_budget_window (window_start);
ALTER TABLE audit_log ADD KEY idx_audit_log_occurred (occurred_at);
