#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| auth_billing_fuzz::customer_request(data));
