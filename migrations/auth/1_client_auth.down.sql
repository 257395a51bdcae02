DROP TABLE client_auth;
