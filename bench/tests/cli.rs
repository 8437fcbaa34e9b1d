//! The `bench` binary end to end against a loopback server: endpoints from `--target`
//! and from a fake `stack outputs --json`, results.json written.

mod common;

use std::path::Path;
use std::time::Duration;

use bench::loopback::Loopback;
use common::{bench, bench_async, short_run};

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_target_flags_writes_results() {
    let run = short_run().await;
    let stdout = &run.stdout;
    assert!(
        stdout.contains("p99 ms") && stdout.contains("k8s"),
        "{stdout}"
    );
    let r = results(&run.out);
    assert_eq!(r["backends"]["k8s"]["requests"], 20);
    assert_eq!(r["backends"]["k8s"]["ok"], 20);
    assert_eq!(r["records"].as_array().unwrap().len(), 20);
    assert_eq!(r["records"][0]["text_class"], "short");
    assert_eq!(r["config"]["mode"], "open");
    assert_eq!(run.server.hits(), 20);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reads_the_endpoints_from_stack_outputs() {
    let (a, b) = (
        Loopback::start(Duration::ZERO).await.unwrap(),
        Loopback::start(Duration::ZERO).await.unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("stack");
    test_support::write_executable(
        &stack,
        &format!(
            "#!/bin/sh\necho '{{\"api_url\":\"{}/\",\"service_url\":\"{}\",\"bucket\":\"x\"}}'\n",
            a.url(),
            b.url()
        ),
    );
    let out = dir.path().join("run");
    let o = bench_async(&[
        "run",
        "--stack-bin",
        stack.to_str().unwrap(),
        "--concurrency",
        "2",
        "--requests",
        "6",
        "--duration",
        "10s",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = results(&out);
    assert_eq!(r["config"]["mode"], "closed");
    assert_eq!(r["backends"]["lambda"]["ok"], 6);
    assert_eq!(r["backends"]["k8s"]["ok"], 6);
    assert_eq!((a.hits(), b.hits()), (6, 6));
}

#[test]
fn bad_flags_are_refused() {
    for args in [
        &["run", "--target", "gcp=http://x"][..],
        &[
            "run",
            "--target",
            "k8s=http://127.0.0.1:1",
            "--duration",
            "soon",
        ],
        &[
            "run",
            "--target",
            "k8s=http://127.0.0.1:1",
            "--profile",
            "trace",
        ],
        &["run", "--stack-bin", "/nonexistent/stack"],
    ] {
        let o = bench(args);
        assert!(!o.status.success(), "{args:?} succeeded");
    }
}

/// A backend that answers 200 POSITIVE to everything: `bench check` must fail it on
/// the model's answers and on every bad input, and exit 1 with a summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_a_wrong_backend() {
    let server = Loopback::start(Duration::ZERO).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts.txt");
    std::fs::write(
        &texts,
        "a wonderful film\na dull, tedious and boring mess\n",
    )
    .unwrap();
    let expect = dir.path().join("expected.jsonl");
    std::fs::write(
        &expect,
        "{\"label\":\"POSITIVE\",\"score\":0.99}\n{\"label\":\"NEGATIVE\",\"score\":0.8}\n",
    )
    .unwrap();
    let target = format!("k8s={}", server.url());
    let check: [&str; 7] = [
        "check",
        "--target",
        &target,
        "--texts",
        texts.to_str().unwrap(),
        "--expect",
        expect.to_str().unwrap(),
    ];
    let o = bench_async(&[&check[..], &["--json"]].concat()).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let outcomes: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let verdict = |check: &str| {
        outcomes
            .iter()
            .find(|x| x["check"] == check)
            .unwrap_or_else(|| panic!("no check {check}: {outcomes:?}"))["verdict"]
            .clone()
    };
    // The first text happens to get the right answer; the second does not.
    assert_eq!(verdict("predict \"a wonderful film\""), "pass");
    assert_eq!(
        verdict("predict \"a dull, tedious and boring mess\""),
        "fail"
    );
    assert_eq!(verdict("bad input invalid_json"), "fail");
    assert_eq!(verdict("bad input wrong_content_type"), "fail");
    assert_eq!(verdict("GET /healthz"), "pass");
    assert_eq!(verdict("GET /metrics"), "fail");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("bench check: ") && stderr.contains("failed"),
        "{stderr}"
    );

    // Expectations that do not cover the texts are refused before anything is sent.
    std::fs::write(&expect, "{\"label\":\"POSITIVE\",\"score\":0.99}\n").unwrap();
    let hits = server.hits();
    let o = bench_async(&check).await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 answers for 2 texts"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(server.hits(), hits);
}

/// `bench cost` prices from flags alone, refuses to guess a missing input, and reads a
/// run's measurements.
#[test]
fn cost_needs_measured_or_given_inputs() {
    let o = bench(&["cost", "--rate", "5"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--lambda-ms"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = bench(&[
        "cost",
        "--rate",
        "1,100",
        "--lambda-ms",
        "50",
        "--pod-rps",
        "20",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["bills"].as_array().unwrap().len(), 2);
    assert_eq!(v["bills"][1]["nodes"], 5);
    assert!(v["break_even_rps"].as_f64().unwrap() > 1.0);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("results.json"),
        r#"{"platform": {"lambda": {"billed_ms": 500.0, "invocations": 10, "memory_mb": 1024}}}"#,
    )
    .unwrap();
    let o = bench(&[
        "cost",
        "--inputs",
        dir.path().to_str().unwrap(),
        "--nodes",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["workload"]["lambda_ms"], 50.0);
    assert_eq!(v["workload"]["lambda_memory_mb"], 1024.0);
    assert_eq!(v["inputs"]["lambda_ms"], "measured");
    assert_eq!(v["bills"][0]["nodes"], 3);
}
