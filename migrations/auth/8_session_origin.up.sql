-- Where and with what each session (refresh-token family) began, for its owner's list of
-- sessions (GET /api/v3/users/me/sessions): the client address as auth saw it (after trusted
-- proxies; the audit log already keeps it for every sign-in) and the User-Agent, without control
-- characters and cut to 255 characters. NULL for sessions begun before this migration, and for a
-- client that sent no User-Agent. Both go with the family (`admin purge`, account deletion).
ALTER TABLE refresh_token_families
    ADD COLUMN client_address VARCHAR(45) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN user_agent VARCHAR(255) NULL;
