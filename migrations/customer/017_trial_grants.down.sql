DROP TABLE trial_grants;
