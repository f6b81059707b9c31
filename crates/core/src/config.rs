//! Reading settings: one error type for every layer's config, and one way to write a duration.
//!
//! Every layer's config type validates itself and, with its crate's `serde` feature, reads
//! from TOML or JSON. They share:
//!
//! - [`ConfigError`]: the field's full path (`circuit_breaker.failure_threshold`), the value,
//!   why it is refused, and, when read from a file, the line;
//! - [`duration`]: durations as seconds (`30`, `0.25`) or text (`"30s"`, `"250ms"`, `"1h 30m"`);
//! - [`line_of`]: where a field is written in a TOML text, for errors found after parsing.

pub mod duration;
mod error;
mod line;
mod redis;

pub use self::error::ConfigError;
pub use self::line::line_of;
pub use self::redis::{DEFAULT_COMMAND_TIMEOUT, RedisSettings};
