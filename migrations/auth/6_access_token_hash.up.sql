-- Each refresh token records the SHA-256 (hex) of the access token issued with it. Auth then
-- recognizes an access token it issued in the same statement that reads the token's user
-- (GET /api/v3/users/me) instead of checking its Ed25519 signature: a record written in the
-- transaction that issued the token is as good as the signature, and costs no arithmetic.
-- NULL for tokens issued before this migration: their access tokens are checked by signature
-- (as is any token auth does not find here), and expire within 15 minutes anyway.
ALTER TABLE refresh_tokens
    ADD COLUMN access_token_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL AFTER parent_hash,
    ADD KEY idx_refresh_tokens_access_token (access_token_hash);
