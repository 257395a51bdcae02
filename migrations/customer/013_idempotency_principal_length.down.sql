-- Back to VARCHAR(255). Fails (and changes nothing) while a stored owner is longer: delete those
-- keys first, e.g. DELETE FROM idempotency_keys WHERE CHAR_LENGTH(principal) > 255.
ALTER TABLE idempotency_keys MODIFY principal VARCHAR(255) NOT NULL;
