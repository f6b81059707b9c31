//! Estimate.
