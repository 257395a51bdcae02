ALTER TABLE audit_log DROP KEY idx_audit_log_occurred;
ALTER TABLE refresh_token_families DROP KEY idx_refresh_token_families_created;
