DROP TABLE audit_seal;

ALTER TABLE audit_log
    DROP COLUMN seal,
    DROP COLUMN seal_prev;
