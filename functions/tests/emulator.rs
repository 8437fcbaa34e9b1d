//! End to end: the real `bootstrap` binary under the emulator, with a tiny fixture.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{predict, start};
use lambda_emulator::{Answer, EmulatorConfig, InvokeError};
use serde_json::json;

fn config(model_dir: &str) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(env!("CARGO_BIN_EXE_bootstrap"));
    config.env = vec![
        ("MODEL_DIR".into(), model_dir.into()),
        ("MODEL_THREADS".into(), "1".into()),
        ("MODEL_S3_URI".into(), String::new()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    config.timeout = Duration::from_secs(20);
    config
}

fn tiny() -> String {
    common::tiny_model().display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_request_is_cold_and_the_second_warm_on_the_same_instance() {
    let emulator = start(config(&tiny())).await;
    let first = predict(&emulator, r#"{"text": "a wonderful film"}"#).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.json()["label"].is_string(), "{}", first.body);
    assert_eq!(first.header("x-lambda-cold"), Some("true"));
    let init_ms: f64 = first
        .header("x-lambda-init-duration-ms")
        .expect("init duration on a cold start")
        .parse()
        .unwrap();
    assert!(init_ms > 0.0 && init_ms < 10_000.0, "{init_ms}");

    let second = predict(&emulator, r#"{"inputs": ["great", "awful"]}"#).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json().as_array().map(Vec::len), Some(2));
    assert_eq!(second.header("x-lambda-cold"), Some("false"));
    assert_eq!(second.header("x-lambda-init-duration-ms"), None);
    assert_eq!(
        first.header("x-lambda-instance"),
        second.header("x-lambda-instance")
    );

    let reports = emulator.reports();
    assert_eq!(reports.len(), 2);
    assert!(
        reports[0].line().contains("Init Duration: "),
        "{}",
        reports[0].line()
    );
    assert!(!reports[1].line().contains("Init Duration"));
    for report in &reports {
        assert!(report.billed_ms as f64 >= report.duration.as_secs_f64() * 1e3);
        assert!(report.max_memory_used_mb > 0, "{}", report.line());
    }
    assert_eq!(emulator.instances(), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_servers_error_through_the_http_front() {
    let emulator = start(config(&tiny())).await;
    let reply = predict(&emulator, r#"{"inputs": []}"#).await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.json()["error"], "invalid_input");
    let addr = emulator.addr();
    let form = tokio::task::spawn_blocking(move || {
        test_support::http(addr, "POST", "/predict", "text/plain", b"{\"text\": \"x\"}")
    })
    .await
    .unwrap();
    assert_eq!(form.status, 415);
    assert_eq!(form.json()["error"], "unsupported_media_type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_requests_start_two_instances() {
    let emulator = start(config(&tiny())).await;
    let event = || Bytes::from(json!({"text": "concurrent"}).to_string());
    let (a, b) = tokio::join!(emulator.invoke(event()), emulator.invoke(event()));
    let (a, b) = (a.report.expect("a ran"), b.report.expect("b ran"));
    assert!(a.cold && b.cold);
    assert_ne!(a.instance, b.instance);
    assert_eq!(emulator.instances(), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_are_throttled() {
    let mut config = config(&tiny());
    config.max_concurrency = 1;
    let emulator = start(config).await;
    let event = || Bytes::from(json!({"text": "one at a time"}).to_string());
    let (a, b) = tokio::join!(emulator.invoke(event()), emulator.invoke(event()));
    let throttled: Vec<_> = [&a, &b]
        .into_iter()
        .filter(|i| matches!(i.result, Err(InvokeError::Throttled(1))))
        .collect();
    assert_eq!(throttled.len(), 1, "{a:?} {b:?}");
    assert_eq!(
        InvokeError::Throttled(1).error_type(),
        "TooManyRequestsException"
    );
    // Once the instance is idle again, the next request runs on it.
    let third = emulator.invoke(event()).await;
    assert!(matches!(third.result, Ok(Answer::Response(_))), "{third:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_model_is_an_init_error_and_a_clean_500() {
    let emulator = start(config("/nonexistent/model")).await;
    let started = std::time::Instant::now();
    let reply = predict(&emulator, r#"{"text": "anyone there?"}"#).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // API Gateway hides the cause, as in AWS; the emulator names it in a header.
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(reply.json(), json!({"message": "Internal Server Error"}));
    assert_eq!(
        reply.header("x-lambda-error-type"),
        Some("Runtime.InitError")
    );
    let detail = reply.header("x-lambda-error").unwrap();
    assert!(detail.contains("failed to initialize"), "{detail}");
    // The function's own message, as posted to /init/error, names the path and the fix.
    assert!(detail.contains("/nonexistent/model"), "{detail}");
    assert!(detail.contains("MODEL_DIR"), "{detail}");
    assert_eq!(emulator.instances(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_are_reaped_after_the_keep_alive() {
    let mut config = config(&tiny());
    config.keep_alive = Duration::from_millis(200);
    let emulator = start(config).await;
    let first = predict(&emulator, r#"{"text": "hello"}"#).await;
    assert_eq!(first.header("x-lambda-cold"), Some("true"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(emulator.instances(), (0, 0));
    let second = predict(&emulator, r#"{"text": "hello again"}"#).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-lambda-cold"), Some("true"));
    assert_ne!(
        first.header("x-lambda-instance"),
        second.header("x-lambda-instance")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_api_passes_the_plain_body_as_a_direct_invocation() {
    let emulator = start(config(&tiny())).await;
    let addr = emulator.addr();
    let reply = tokio::task::spawn_blocking(move || {
        test_support::http(
            addr,
            "POST",
            "/2015-03-31/functions/sentiment/invocations",
            "application/json",
            br#"{"text": "direct"}"#,
        )
    })
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert!(
        body["label"].is_string() && body.get("statusCode").is_none(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_an_init_error_naming_the_setting() {
    let mut config = config(&tiny());
    config.env.push(("MODEL_THREADS".into(), "many".into()));
    let emulator = start(config).await;
    let reply = predict(&emulator, r#"{"text": "x"}"#).await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    let detail = reply.header("x-lambda-error").unwrap();
    assert!(detail.contains("MODEL_THREADS=\"many\""), "{detail}");
}

#[test]
fn bootstrap_outside_a_lambda_runtime_says_so() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .expect("run bootstrap");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AWS_LAMBDA_RUNTIME_API"), "{stderr}");
}
