ALTER TABLE subscriptions DROP COLUMN quantity;
