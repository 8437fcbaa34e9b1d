//! Shared by the integration tests: a tiny fixture checkpoint (the HTTP client and
//! moto come from the workspace's `test-support`).

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use model_cache::fixture::{FixtureSize, FixtureSpec};

/// A tiny checkpoint, written once per test binary.
pub fn tiny_model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lambda-tiny-")
            .tempdir()
            .expect("temp dir")
            .keep();
        model_cache::fixture::write(&dir, &FixtureSpec::new(FixtureSize::Tiny)).expect("fixture");
        dir
    })
}
