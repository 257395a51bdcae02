DROP TABLE customer_provisioning;
