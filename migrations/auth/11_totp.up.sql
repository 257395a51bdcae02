-- A second factor: an authenticator app (TOTP, RFC 6238) and one-time recovery codes.
-- `totp_secret`: the app's shared secret, sealed as the email is (AES-256-GCM with the
-- `encryption_key` keys, the user's id in the context), NULL when the user has none. Set by
-- enrolment; `totp_enabled_at` (Unix seconds) only once the user proved the app holds it, and
-- from then on a login needs a code. `totp_last_step`: the 30-second step of the last code
-- accepted, so a code works once. `mfa_recovery_codes`: the SHA-256 (hex, comma-separated) of
-- the unused recovery codes (at most 10 of 64 characters). BIGINT times: Spin cannot read
-- TIMESTAMP columns. Existing accounts start with no second factor.
ALTER TABLE client_auth
    ADD COLUMN totp_secret VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN totp_enabled_at BIGINT NULL,
    ADD COLUMN totp_last_step BIGINT NULL,
    ADD COLUMN mfa_recovery_codes VARCHAR(1000) CHARACTER SET ascii COLLATE ascii_bin NULL;
