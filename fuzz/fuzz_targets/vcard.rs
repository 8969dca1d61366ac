//! vCard reader: never panics; what it reads survives vCard 4.0, 3.0 and jCard unchanged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = sealsync_contact::check::vcard_round_trip(data) {
        panic!("{e}");
    }
});
