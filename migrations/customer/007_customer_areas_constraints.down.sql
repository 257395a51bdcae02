ALTER TABLE customer_areas DROP FOREIGN KEY fk_customer_areas_customer;
ALTER TABLE customer_areas
    DROP INDEX idx_customer_areas_area,
    DROP COLUMN created_at;
