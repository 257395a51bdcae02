-- customer_areas (the seed's area_ids) as this service uses it: every row belongs to a customer
-- (foreign key, removed with the customer), and areas can be listed by area. Rows of customers that
-- no longer exist (possible in the legacy schema, which had no foreign key) are removed first.
DELETE ca FROM customer_areas ca LEFT JOIN customers c ON c.id = ca.customer_id WHERE c.id IS NULL;
ALTER TABLE customer_areas
    ADD COLUMN created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    ADD INDEX idx_customer_areas_area (area_id),
    ADD CONSTRAINT fk_customer_areas_customer FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE CASCADE;
