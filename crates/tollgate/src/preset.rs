//! [`Preset`]: a starting point for the settings, itself a config file.

use serde::{Deserialize, Serialize};

/// A starting point for the settings. Each preset is a config file of its own (shown in
/// `docs/config.md`); a config's own values are laid over it, key by key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// One call at a time, about one every 2 s (30 a minute), patient retries, a breaker that
    /// trips early, large batches: for free tiers and shared keys.
    Conservative,
    /// Ten calls at a time, adapting to what the provider takes; limits learned from the
    /// provider's headers or its 429s; six attempts 1 s to 60 s apart with ±25 % jitter
    /// (the default).
    #[default]
    Balanced,
    /// Fifty calls at a time, short backoff, a breaker that tolerates more, small fast batches:
    /// for high tiers.
    Aggressive,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Self; 3] = [Self::Conservative, Self::Balanced, Self::Aggressive];

    /// The preset's name in a config file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Conservative => "conservative",
            Self::Balanced => "balanced",
            Self::Aggressive => "aggressive",
        }
    }

    /// The preset as a TOML config file.
    pub const fn toml(self) -> &'static str {
        match self {
            Self::Conservative => include_str!("../presets/conservative.toml"),
            Self::Balanced => include_str!("../presets/balanced.toml"),
            Self::Aggressive => include_str!("../presets/aggressive.toml"),
        }
    }
}
