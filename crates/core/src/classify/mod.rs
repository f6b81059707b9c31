//! Classification of responses and errors into [`Outcome`](crate::Outcome)s.
mod rules;
pub use self::rules::{classify_error, classify_response, classify_stream_error};
