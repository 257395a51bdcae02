DROP TABLE service_rate_limit;
