DROP TABLE login_checks;
