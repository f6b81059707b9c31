//! Parsers for the duration and time formats providers use.
