-- The owner of an Idempotency-Key is `user:<id>` or `service:<name>`: with a user id of up to 255
-- characters (the seed's VARCHAR(255)) that is up to 260, which VARCHAR(255) refused ("Data too
-- long": every keyed write of such a user failed). 300 leaves room for either prefix.
ALTER TABLE idempotency_keys MODIFY principal VARCHAR(300) NOT NULL;
