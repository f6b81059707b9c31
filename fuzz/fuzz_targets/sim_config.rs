//! The simulator's scenario files (`docs/scenarios/*.toml`), `tollgate_sim::SimConfig::from_toml`:
//! limits, latency, faults and phases. Nothing panics, and a config that loads validates again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_sim::SimConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = SimConfig::from_toml(text) {
        config.validate().expect("a loaded config is valid");
    }
});
