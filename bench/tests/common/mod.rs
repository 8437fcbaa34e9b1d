//! What the tests of the `bench` binary share: running it, and a short run against a
//! loopback server that more than one test checks the output of.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use bench::loopback::Loopback;

/// Runs the `bench` binary with `args`, without a `BENCH_STACK_BIN` from the
/// environment.
pub fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .env_remove("BENCH_STACK_BIN")
        .output()
        .unwrap()
}

/// [`bench`] off the runtime's threads, so a loopback server on the runtime keeps
/// answering.
pub async fn bench_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bench(&args)
    })
    .await
    .unwrap()
}

/// What the binary printed: stdout, then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A finished [`short_run`].
pub struct ShortRun {
    /// The `k8s` backend.
    pub server: Loopback,
    /// Where the run wrote, inside a directory removed on drop.
    pub out: PathBuf,
    _dir: tempfile::TempDir,
    pub stdout: String,
}

/// `bench run` of 20 short texts, 20 req/s for 1 s, against a loopback server that
/// answers in 5 ms as the `k8s` backend; it must succeed.
pub async fn short_run() -> ShortRun {
    let server = Loopback::start(Duration::from_millis(5)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let target = format!("k8s={}", server.url());
    let o = bench_async(&[
        "run",
        "--target",
        &target,
        "--rate",
        "20",
        "--duration",
        "1s",
        "--texts",
        "short",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ShortRun {
        server,
        out,
        _dir: dir,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
    }
}
