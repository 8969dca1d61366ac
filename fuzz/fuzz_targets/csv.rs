//! CSV reader (Google layout): never panics; what it reads survives a write and read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = sealsync_contact::check::csv_round_trip(data) {
        panic!("{e}");
    }
});
