//! The API Gateway front and the Invoke API against a small Python `bootstrap` that
//! speaks the Runtime API: routes, limits, timeouts, throttling, logs, cgroups.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lambda_emulator::{ApiConfig, Emulator, EmulatorConfig, LogLine};
use serde_json::json;
use test_support::HttpReply;
use tokio::sync::mpsc;

/// Answers every event after sleeping the event body's `sleep` seconds, echoing the
/// event; prints its cgroup at init and a line per invocation.
const BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import json, os, time, urllib.request
base = "http://%s/2018-06-01/runtime/invocation" % os.environ["AWS_LAMBDA_RUNTIME_API"]
print("cgroup:", open("/proc/self/cgroup").read().replace("\n", " "), flush=True)
while True:
    with urllib.request.urlopen(base + "/next") as r:
        rid = r.headers["lambda-runtime-aws-request-id"]
        event = json.loads(r.read())
    body = json.loads(event.get("body") or "{}") if event.get("version") == "2.0" else event
    time.sleep(float(body.get("sleep", 0)))
    print("handled", rid, flush=True)
    out = {"statusCode": 200, "headers": {"content-type": "application/json"},
           "body": json.dumps({"event": event})}
    req = urllib.request.Request(base + "/" + rid + "/response",
                                 data=json.dumps(out).encode(), method="POST")
    urllib.request.urlopen(req).read()
"#;

struct Fixture {
    emulator: Emulator,
    logs: mpsc::UnboundedReceiver<LogLine>,
    _dir: tempfile::TempDir,
}

async fn start(edit: impl FnOnce(&mut EmulatorConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap: PathBuf = dir.path().join("bootstrap");
    std::fs::write(&bootstrap, BOOTSTRAP).unwrap();
    std::fs::set_permissions(
        &bootstrap,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (sink, logs) = mpsc::unbounded_channel();
    let mut config = EmulatorConfig::new(&bootstrap);
    config.function_name = "echo".into();
    config.print_reports = false;
    config.log_sink = Some(sink);
    config.api = ApiConfig {
        api_id: "api123".into(),
        routes: vec!["POST /predict".into(), "GET /items/{id}".into()],
        integration_timeout: Duration::from_secs(30),
    };
    edit(&mut config);
    let emulator = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts");
    Fixture {
        emulator,
        logs,
        _dir: dir,
    }
}

async fn http(
    addr: SocketAddr,
    method: &'static str,
    path: &'static str,
    body: String,
) -> HttpReply {
    tokio::task::spawn_blocking(move || {
        test_support::http(addr, method, path, "application/json", body.as_bytes())
    })
    .await
    .expect("client thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_decide_what_invokes_the_function() {
    let f = start(|_| {}).await;
    let addr = f.emulator.addr();
    let missing = http(addr, "GET", "/predict", String::new()).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.json(), json!({"message": "Not Found"}));
    assert!(missing.header("apigw-requestid").is_some());
    assert_eq!(f.emulator.instances(), (0, 0), "nothing was invoked");

    let item = http(addr, "GET", "/items/42?x=1", String::new()).await;
    assert_eq!(item.status, 200, "{}", item.body);
    let event = &item.json()["event"];
    assert_eq!(event["routeKey"], "GET /items/{id}");
    assert_eq!(event["pathParameters"]["id"], "42");
    assert_eq!(event["queryStringParameters"]["x"], "1");
    assert_eq!(event["requestContext"]["apiId"], "api123");
    assert_eq!(
        event["requestContext"]["requestId"].as_str(),
        item.header("apigw-requestid")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_ten_megabytes_is_refused_before_invoking() {
    let f = start(|_| {}).await;
    let addr = f.emulator.addr();
    let reply = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 11000000\r\nConnection: close\r\n\r\n";
        s.write_all(head.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.contains(r#"{"message":"Request Entity Too Large"}"#),
        "{reply}"
    );
    assert_eq!(f.emulator.instances(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_the_integration_timeout_is_503_and_the_function_still_finishes() {
    let f = start(|c| c.api.integration_timeout = Duration::from_millis(1500)).await;
    let reply = http(
        f.emulator.addr(),
        "POST",
        "/predict",
        r#"{"sleep": 3}"#.into(),
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json(), json!({"message": "Service Unavailable"}));
    assert_eq!(
        reply.header("x-lambda-error-type"),
        Some("IntegrationTimeout")
    );
    // Lambda runs the invocation to its end; its REPORT arrives afterwards.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.emulator.reports().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_concurrency_limit_lambda_says_429_and_api_gateway_500() {
    let f = start(|c| c.max_concurrency = 1).await;
    let addr = f.emulator.addr();
    let slow = tokio::spawn(http(addr, "POST", "/predict", r#"{"sleep": 2}"#.into()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let through_api = http(addr, "POST", "/predict", "{}".into()).await;
    assert_eq!(through_api.status, 500, "{}", through_api.body);
    assert_eq!(
        through_api.json(),
        json!({"message": "Internal Server Error"})
    );
    assert_eq!(
        through_api.header("x-lambda-error-type"),
        Some("TooManyRequestsException")
    );
    let direct = http(
        addr,
        "POST",
        "/2015-03-31/functions/echo/invocations",
        "{}".into(),
    )
    .await;
    assert_eq!(direct.status, 429, "{}", direct.body);
    assert_eq!(
        direct.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    assert_eq!(direct.json()["message"], "Rate Exceeded.");
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_one_stream_per_environment_with_the_functions_output() {
    let mut f = start(|_| {}).await;
    let reply = http(f.emulator.addr(), "POST", "/predict", "{}".into()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let request_id = reply.header("x-lambda-request-id").unwrap().to_string();
    let mut lines = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(2), f.logs.recv()).await {
        lines.push(line);
    }
    let text: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    let at = |prefix: &str| {
        text.iter()
            .position(|m| m.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in {text:#?}"))
    };
    at("cgroup:");
    assert!(at("START RequestId: ") < at(&format!("handled {request_id}")));
    assert!(at(&format!("handled {request_id}")) < at("END RequestId: "));
    assert!(at("END RequestId: ") < at("REPORT RequestId: "));
    assert!(text[at("REPORT")].contains("Init Duration: "), "{text:?}");
    let stream = &lines[0].stream;
    assert!(lines.iter().all(|l| &l.stream == stream), "{lines:#?}");
    assert!(
        stream.len() == "2026/12/07/[$LATEST]".len() + 32 && stream.contains("/[$LATEST]"),
        "{stream}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_environment_runs_under_its_memory_sizes_cpu_and_memory() {
    if !cgroups_writable() {
        eprintln!("skipped: cgroups are not writable here (not root, or no cgroup fs)");
        return;
    }
    let mut f = start(|c| {
        c.limit_resources = true;
        c.memory_mb = 512;
    })
    .await;
    let reply = http(f.emulator.addr(), "POST", "/predict", "{}".into()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut first = String::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(2), f.logs.recv()).await {
        if line.message.starts_with("cgroup:") {
            first = line.message;
            break;
        }
    }
    assert!(first.contains("sentiment-stack/lambda-echo-"), "{first}");
    let group = first
        .split_whitespace()
        .filter_map(|entry| entry.split(':').nth(2))
        .find(|path| path.contains("sentiment-stack/lambda-echo-"))
        .unwrap()
        .to_string();
    let v1 = PathBuf::from("/sys/fs/cgroup/cpu").join(group.trim_start_matches('/'));
    if v1.join("cpu.cfs_quota_us").exists() {
        let quota = std::fs::read_to_string(v1.join("cpu.cfs_quota_us")).unwrap();
        // 512 MB buys 512/1769 of a vCPU, 290 millicores: 29 ms of every 100 ms.
        assert_eq!(quota.trim(), "29000");
        let memory = PathBuf::from("/sys/fs/cgroup/memory").join(group.trim_start_matches('/'));
        let limit = std::fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(limit.trim(), (512u64 * 1024 * 1024).to_string());
    }
}

fn cgroups_writable() -> bool {
    let probe = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup"]
        .iter()
        .map(|root| PathBuf::from(root).join("sentiment-stack-probe"))
        .find(|p| std::fs::create_dir(p).is_ok());
    match probe {
        Some(p) => {
            let _ = std::fs::remove_dir(p);
            true
        }
        None => false,
    }
}
