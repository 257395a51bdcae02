ALTER TABLE audit_log DROP KEY idx_audit_log_occurred;
ALTER TABLE user_call_budget DROP KEY idx_user_call_budget_window;
ALTER TABLE stripe_events DROP KEY idx_stripe_events_received;
