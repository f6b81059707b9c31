//! `tollgate proxy`'s config file (`docs/tollgate.toml`): `[server]`, `[upstream]` and the
//! `[stack]` it hands to `StackConfig`. The parser lives in the `tollgate` binary
//! (`crates/cli/src/proxy/config.rs`), which has no library to link, so that file is compiled
//! into this target as it is (with the header allow-list it checks). Environment variables are read from a fixed map. Nothing panics,
//! and a config that loads has an upstream credential header when it has a key.
#![no_main]

// The binary's own module layout, so that the config's submodules and its use of the header
// allow-list resolve as they do there.
#[allow(dead_code)]
#[path = "../../crates/cli/src/proxy"]
mod proxy {
    pub(crate) mod config;
    pub(crate) mod headers;
}

use proxy::config;

use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "TOLLGATE_API_KEYS" => Some("tg-a, tg-b".to_owned()),
        "OPENAI_API_KEY" | "ANTHROPIC_API_KEY" => Some("sk-fuzz".to_owned()),
        "EMPTY" => Some(String::new()),
        "BAD_KEY" => Some("sk-\nfuzz".to_owned()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = config::parse(text, &env)
        && config.upstream.key.is_some()
    {
        assert!(config.upstream.credential().is_some());
    }
});
