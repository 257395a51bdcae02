DROP TABLE user_call_budget;
