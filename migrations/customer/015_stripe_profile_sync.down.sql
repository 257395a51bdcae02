DROP TABLE stripe_profile_sync;
