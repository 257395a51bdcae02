-- How many units of its price a subscription bills (seats, say): Stripe's item `quantity`,
-- mirrored as the price is. Every subscription this API made before the column had one unit
-- (it never sent another), which the default records; one mirrored from Stripe with more takes
-- Stripe's quantity from its next event or change.
ALTER TABLE subscriptions ADD COLUMN quantity INT UNSIGNED NOT NULL DEFAULT 1;
