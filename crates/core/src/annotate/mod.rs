//! Annotate.
