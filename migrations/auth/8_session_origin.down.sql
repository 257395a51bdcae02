ALTER TABLE refresh_token_families
    DROP COLUMN client_address,
    DROP COLUMN user_agent;
