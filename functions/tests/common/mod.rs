//! Shared by the integration tests: a tiny fixture checkpoint, and an emulator to
//! start and ask (the HTTP client and moto come from the workspace's `test-support`).

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lambda_emulator::{Emulator, EmulatorConfig};
use model_cache::fixture::{FixtureSize, FixtureSpec};

/// A tiny checkpoint, written once per test binary.
pub fn tiny_model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/tmp (statics are never dropped, so it outlives the tests; a
        // `cargo clean` removes it), one per test binary.
        let dir = tempfile::Builder::new()
            .prefix("lambda-tiny-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir")
            .keep();
        model_cache::fixture::write(&dir, &FixtureSpec::new(FixtureSize::Tiny)).expect("fixture");
        dir
    })
}

/// Starts an emulator for `config` on a free loopback port.
pub async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts")
}

/// Runs a blocking HTTP exchange off the async workers.
pub async fn predict(emulator: &Emulator, body: &'static str) -> test_support::HttpReply {
    let addr = emulator.addr();
    tokio::task::spawn_blocking(move || test_support::predict(addr, body))
        .await
        .expect("client thread")
}
