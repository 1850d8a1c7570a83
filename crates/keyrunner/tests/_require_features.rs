//! Fails the build of the test suite unless every runtime feature is on.

#[cfg(not(all(feature = "tokio", feature = "smol")))]
compile_error!(
    "run the tests with --all-features (`cargo test -p keyrunner --all-features`): \
     they exercise the tokio and smol spawners"
);
