#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshguard_fuzz_targets::abi::abi_meshguard(data));
