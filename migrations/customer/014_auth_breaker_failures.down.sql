DROP TABLE auth_breaker_failures;
