//! Shared helpers for the keyrunner benchmarks.
