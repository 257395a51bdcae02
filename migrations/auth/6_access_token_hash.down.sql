ALTER TABLE refresh_tokens
    DROP KEY idx_refresh_tokens_access_token,
    DROP COLUMN access_token_hash;
