//! Body.
