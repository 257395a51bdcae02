DROP TABLE customer_areas;
