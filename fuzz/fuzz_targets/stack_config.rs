//! The stack's config loader, `tollgate::StackConfig::from_toml` and `from_json` (the seeds'
//! keys, durations as seconds or text), and `LlmStack::new` over what loads. Nothing panics, and
//! a config that loads builds a stack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::{LlmStack, StackConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = [StackConfig::from_toml(text), StackConfig::from_json(text)];
    for config in loaded.into_iter().flatten() {
        if let Err(e) = LlmStack::new(&config) {
            panic!("a config that loaded does not build a stack: {e}");
        }
    }
});
