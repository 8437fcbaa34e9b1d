//! The local target's API Gateway front, end to end through the CLI against moto:
//! `stack up` deploys a zip whose `bootstrap` is a small Python function, `api_url`
//! is a loopback URL that runs that uploaded zip (cold starts, the concurrency
//! limit, routes), its logs land in CloudWatch Logs, a second `up` leaves the front
//! alone, a changed function restarts it on the same port, `down` stops it.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{clients, project_on_moto, write_zip};
use serde_json::json;

/// A function that sleeps the body's `sleep` seconds and echoes its event.
const BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import json, os, time, urllib.request
base = "http://%s/2018-06-01/runtime/invocation" % os.environ["AWS_LAMBDA_RUNTIME_API"]
print("init", os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), flush=True)
while True:
    with urllib.request.urlopen(base + "/next") as r:
        rid = r.headers["lambda-runtime-aws-request-id"]
        event = json.loads(r.read())
    body = json.loads(event.get("body") or "{}")
    time.sleep(float(body.get("sleep", 0)))
    out = {"statusCode": 200, "headers": {"content-type": "application/json"},
           "body": json.dumps({"route": event["routeKey"], "memory": os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]})}
    req = urllib.request.Request(base + "/" + rid + "/response", data=json.dumps(out).encode(), method="POST")
    urllib.request.urlopen(req).read()
"#;

/// Stops fronts a failed test left running (they are detached from the test).
struct Fronts(PathBuf);

impl Fronts {
    fn pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("front.pid")).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter_map(|v| v["pid"].as_u64().map(|p| p as u32))
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .collect()
    }
}

impl Drop for Fronts {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

async fn post(addr: SocketAddr, path: &'static str, body: &'static str) -> test_support::HttpReply {
    tokio::task::spawn_blocking(move || {
        test_support::http(addr, "POST", path, "application/json", body.as_bytes())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_url_runs_the_uploaded_zip_like_api_gateway_and_lambda() {
    let (m, p) = project_on_moto("front");
    write_zip(&p.path("bootstrap.zip"), BOOTSTRAP.as_bytes());
    let fronts = Fronts(p.path(".stack/front.local.apigw"));
    let env = [("STACK_LAMBDA_CONCURRENCY", "2")];

    let (code, out, err) = p.run_env(&["up", "--yes"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let (_, url, _) = p.run(&["outputs", "api_url"]);
    let url = url.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(out.contains(&format!("api_url = {url}")), "{out}");
    let addr = addr_of(&url);

    // Two concurrent requests: two cold environments. A third while both are busy is
    // throttled by Lambda, which API Gateway answers as a 500.
    let slow = r#"{"sleep": 2}"#;
    let (a, b) = tokio::join!(post(addr, "/predict", slow), post(addr, "/predict", slow));
    let third = {
        let a = tokio::spawn(post(addr, "/predict", slow));
        let b = tokio::spawn(post(addr, "/predict", slow));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let c = post(addr, "/predict", "{}").await;
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
        c
    };
    for r in [&a, &b] {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.json(),
            json!({"route": "POST /predict", "memory": "1024"})
        );
        assert_eq!(r.header("x-lambda-cold"), Some("true"), "{r:?}");
    }
    assert_ne!(a.header("x-lambda-instance"), b.header("x-lambda-instance"));
    assert_eq!(third.status, 500, "{third:?}");
    assert_eq!(third.json(), json!({"message": "Internal Server Error"}));
    assert_eq!(
        third.header("x-lambda-error-type"),
        Some("TooManyRequestsException")
    );
    // Only the declared route invokes anything.
    let other = post(addr, "/other", "{}").await;
    assert_eq!(other.status, 404, "{other:?}");

    // START/END/REPORT and the function's own output reach CloudWatch Logs, one stream
    // per environment (moto stores what PutLogEvents sent).
    let c = clients(&m.url).await;
    let mut messages = Vec::new();
    let mut streams = BTreeSet::new();
    for _ in 0..20 {
        let r = c
            .logs
            .filter_log_events()
            .log_group_name("/aws/lambda/front-predict")
            .send()
            .await
            .unwrap();
        messages = r
            .events()
            .iter()
            .map(|e| e.message().unwrap_or_default().to_string())
            .collect();
        streams = r
            .events()
            .iter()
            .filter_map(|e| e.log_stream_name().map(str::to_string))
            .collect();
        if messages.iter().filter(|m| m.starts_with("REPORT")).count() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let reports: Vec<_> = messages
        .iter()
        .filter(|m| m.starts_with("REPORT"))
        .collect();
    assert!(reports.len() >= 4, "{messages:#?}");
    assert!(
        reports.iter().any(|r| r.contains("Init Duration")),
        "{reports:#?}"
    );
    assert!(messages.iter().any(|m| m == "init 1024"), "{messages:#?}");
    assert!(streams.len() >= 2, "{streams:?}");

    // Nothing changed: the same front keeps serving.
    let before = fronts.pids();
    assert_eq!(before.len(), 1);
    let (code, out, err) = p.run_env(&["up", "--yes"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fronts.pids(), before);

    // A new memory size is a new deployment: the front restarts on the same port.
    p.config("front", |v| v["lambda"]["memory_mb"] = json!(512));
    let (code, out, err) = p.run_env(&["up", "--yes"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(fronts.pids(), before);
    let (_, again, _) = p.run(&["outputs", "api_url"]);
    assert_eq!(again.trim(), url);
    let r = post(addr, "/predict", "{}").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["memory"], "512");

    // down stops the front and frees its port.
    let (code, out, err) = p.run(&["down", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(fronts.pids().is_empty());
    assert!(std::net::TcpStream::connect(addr).is_err());
    assert!(!fronts.0.exists());
}
