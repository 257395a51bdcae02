DROP TABLE email_verification_tokens;
ALTER TABLE client_auth DROP COLUMN email_verified_at;
