-- Legacy: the areas a customer subscribes to (the seed's area_ids), one row per (customer, area).
-- Migration 7 adds the foreign key and the area index.
CREATE TABLE customer_areas (
    customer_id VARCHAR(255) NOT NULL,
    area_id INT NOT NULL,
    PRIMARY KEY (customer_id, area_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
