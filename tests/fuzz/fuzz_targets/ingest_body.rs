//! The ingest body parser on arbitrary bytes: it must answer (a batch or an error), never panic,
//! and whatever it accepts must obey the contract's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_795_687_200, 0).expect("a valid time");
    if let Ok(readings) = ingest::parse_batch(body, now, 400) {
        assert!((1..=ingest::MAX_READINGS).contains(&readings.len()));
        for reading in &readings {
            assert!(reading.recorded_at <= now + ingest::MAX_FUTURE);
            assert!(!reading.metric.as_str().is_empty() && reading.metric.as_str().len() <= 64);
        }
    }
});
