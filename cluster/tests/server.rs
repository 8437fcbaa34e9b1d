//! End-to-end tests against the real `sentiment-server` binary on loopback.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use model_cache::{Checkpoint, Classifier, ClassifierOptions, Prediction};
use serde_json::json;
use support::{
    Server, fixture, metric, parse_metrics, request, spawn_predict, spawn_predicts, try_request,
};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_status_code_comes_with_the_shared_error_body() {
    let server = Server::ready(&["--max-body-bytes", "4096"]).await;

    let ok = server.predict(&json!({"text": "a wonderful film"})).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = ok.json();
    assert!(["POSITIVE", "NEGATIVE"].contains(&body["label"].as_str().unwrap()));
    assert!(
        (0.5..=1.0).contains(&body["score"].as_f64().unwrap()),
        "{body}"
    );
    for header in ["x-queue-time", "x-inference-time", "x-total-time"] {
        let value: f64 = ok.header(header).unwrap().parse().unwrap();
        assert!(value >= 0.0, "{header}");
    }

    let batch = server
        .predict(&json!({"inputs": ["good", "bad", "fine"]}))
        .await;
    assert_eq!(batch.status, 200);
    assert_eq!(batch.json().as_array().unwrap().len(), 3);

    server
        .post_json("/predict", b"{not json")
        .await
        .assert_error(400, "invalid_json");
    server
        .post_json("/predict", b"\xff\xfe\x00garbage")
        .await
        .assert_error(400, "invalid_json");
    let wrong_type = request(
        server.addr,
        "POST",
        "/predict",
        &[("content-type", "text/plain")],
        br#"{"text": "hi"}"#,
    )
    .await;
    wrong_type.assert_error(415, "unsupported_media_type");
    assert!(wrong_type.header("x-total-time").is_some());
    server
        .post_json(
            "/predict",
            format!(r#"{{"text": "{}"}}"#, "a".repeat(5000)).as_bytes(),
        )
        .await
        .assert_error(413, "payload_too_large");
    for invalid in [
        json!({"text": "   \n"}),
        json!({"text": 5}),
        json!({"inputs": "x"}),
    ] {
        server
            .predict(&invalid)
            .await
            .assert_error(422, "invalid_input");
    }
    let too_many: Vec<String> = (0..=sentiment_api::MAX_BATCH_INPUTS)
        .map(|i| format!("t{i}"))
        .collect();
    server
        .predict(&json!({"inputs": too_many}))
        .await
        .assert_error(422, "invalid_input");
    server.get("/nope").await.assert_error(404, "not_found");
    let wrong_method = server.get("/predict").await;
    wrong_method.assert_error(405, "method_not_allowed");
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    server
        .post_json("/healthz", b"{}")
        .await
        .assert_error(405, "method_not_allowed");

    // A missing content type is accepted: curl --data-binary users need no header.
    let bare = request(server.addr, "POST", "/predict", &[], br#"{"text": "ok"}"#).await;
    assert_eq!(bare.status, 200, "{}", bare.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_until_the_model_has_run_once() {
    let server = Server::start(&["--load-delay-ms", "1500"]);
    let health = server.get("/healthz").await;
    assert_eq!(health.status, 200);
    server.get("/readyz").await.assert_error(503, "not_ready");
    let early = server.predict(&json!({"text": "too soon"})).await;
    early.assert_error(503, "not_ready");
    assert_eq!(early.header("retry-after"), Some("1"));
    let info = server.get("/info").await.json();
    assert_eq!(info["ready"], false);
    assert!(info["model"].is_null());

    server.wait_ready().await;
    assert_eq!(server.get("/readyz").await.status, 200);
    assert_eq!(server.predict(&json!({"text": "now"})).await.status, 200);
    let log = server.log_text();
    assert!(
        log.contains("ready: model")
            && log.contains("inference threads")
            && log.contains("loaded in"),
        "no start-up line with model, threads and load time:\n{log}"
    );
    // The sha256 is computed in the background after readiness.
    let until = Instant::now() + Duration::from_secs(20);
    let info = loop {
        let info = server.get("/info").await.json();
        if info["weights_sha256"].is_string() || Instant::now() > until {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(info["ready"], true);
    assert_eq!(info["weights_sha256"].as_str().unwrap().len(), 64, "{info}");
    assert_eq!(info["threads"], 1);
    assert!(info["model"]["dim"].as_u64().unwrap() > 0);
    assert_eq!(info["batching"]["max_batch"], 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route() {
    let server = Server::ready(&[]).await;
    let doc = server.get("/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/predict",
        "/healthz",
        "/readyz",
        "/metrics",
        "/info",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
        let method = if path == "/predict" { "post" } else { "get" };
        let status = server
            .get(if path == "/predict" { "/healthz" } else { path })
            .await
            .status;
        assert_eq!(status, 200, "{path}");
        assert!(doc["paths"][path][method].is_object(), "{path} {method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_gets_504() {
    let server =
        Server::ready(&["--inference-delay-ms", "600", "--request-timeout-ms", "150"]).await;
    let late = server.predict(&json!({"text": "slow"})).await;
    late.assert_error(504, "timeout");
    let total: f64 = late.header("x-total-time").unwrap().parse().unwrap();
    assert!((140.0..2000.0).contains(&total), "{total}");
    // The server stays usable and healthy afterwards.
    assert_eq!(server.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_then_recovers() {
    let server = Server::ready(&[
        "--inference-delay-ms",
        "200",
        "--max-batch",
        "1",
        "--queue-capacity",
        "2",
    ])
    .await;
    let burst = spawn_predicts(server.addr, "burst", 12);
    let mut ok = 0;
    let mut overloaded = 0;
    for task in burst {
        let response = task.await.unwrap();
        match response.status {
            200 => ok += 1,
            503 => {
                response.assert_error(503, "overloaded");
                assert_eq!(response.header("retry-after"), Some("1"));
                overloaded += 1;
            }
            other => panic!("unexpected {other}: {}", response.text()),
        }
    }
    assert!(overloaded >= 1, "no 503 with a queue of 2 and 12 requests");
    assert!(ok >= 2, "only {ok} answered");
    // Recovery: once drained, requests succeed again.
    for _ in 0..3 {
        assert_eq!(server.predict(&json!({"text": "after"})).await.status, 200);
    }
    let series = parse_metrics(&server.get("/metrics").await.text());
    assert_eq!(metric(&series, "sentiment_queue_depth", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_every_request_in_flight_then_exits_0() {
    let mut server = Server::ready(&[
        "--inference-delay-ms",
        "250",
        "--max-batch",
        "2",
        "--max-wait-ms",
        "0",
        "--shutdown-grace-secs",
        "20",
    ])
    .await;
    let addr = server.addr;
    let in_flight = spawn_predicts(addr, "in flight", 8);
    // Let them all reach the queue (8 texts at 2 per 250 ms pass: about 1 s of work).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let series = parse_metrics(&server.get("/metrics").await.text());
        let queued = metric(&series, "sentiment_queue_depth", &[]);
        // Texts of passes already started (observed before each forward pass).
        let started = metric(&series, "sentiment_batch_size_sum", &[]);
        if queued + started >= 8.0 || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.sigterm();
    // New connections are refused (or told 503) as soon as the drain starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Ok(late) = try_request(addr, "GET", "/readyz", &[], b"").await {
        assert_eq!(late.status, 503);
    }
    for task in in_flight {
        let response = task.await.unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let code = tokio::task::spawn_blocking(move || {
        let code = server.wait_exit(Duration::from_secs(20));
        (code, server.log_text())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1);
    assert!(code.1.contains("SIGTERM"), "{}", code.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_counters_move() {
    let server = Server::ready(&[]).await;
    let before = parse_metrics(&server.get("/metrics").await.text());
    let ok_before = metric(
        &before,
        "sentiment_http_requests_total",
        &["route=\"/predict\"", "status=\"200\""],
    );
    for text in ["one", "two", "three"] {
        assert_eq!(server.predict(&json!({"text": text})).await.status, 200);
    }
    server
        .predict(&json!({"text": ""}))
        .await
        .assert_error(422, "invalid_input");
    server
        .get("/no/such/route")
        .await
        .assert_error(404, "not_found");
    let response = server.get("/metrics").await;
    assert!(
        response
            .header("content-type")
            .unwrap()
            .contains("openmetrics")
    );
    let after = parse_metrics(&response.text());
    let predict_ok = |s| {
        metric(
            s,
            "sentiment_http_requests_total",
            &["route=\"/predict\"", "status=\"200\""],
        )
    };
    assert_eq!(predict_ok(&after) - ok_before, 3.0);
    assert_eq!(
        metric(
            &after,
            "sentiment_http_requests_total",
            &["route=\"/predict\"", "status=\"422\""]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "sentiment_http_requests_total",
            &["route=\"unmatched\"", "status=\"404\""]
        ),
        1.0
    );
    // Warm-up does not pass through the queue, so only the three requests count.
    assert_eq!(metric(&after, "sentiment_batch_size_count", &[]), 3.0);
    assert_eq!(
        metric(&after, "sentiment_queue_duration_seconds_count", &[]),
        3.0
    );
    assert_eq!(
        metric(&after, "sentiment_inference_duration_seconds_count", &[]),
        3.0
    );
    assert!(metric(&after, "sentiment_tokens_per_request_sum", &[]) >= 9.0);
    assert!(metric(&after, "sentiment_model_load_seconds", &[]) > 0.0);
    assert_eq!(metric(&after, "sentiment_ready", &[]), 1.0);
    assert_eq!(metric(&after, "sentiment_queue_depth", &[]), 0.0);
    assert!(
        metric(
            &after,
            "sentiment_http_request_duration_seconds_count",
            &["route=\"/predict\""]
        ) >= 4.0
    );
}

fn texts() -> Vec<String> {
    let words = [
        "great",
        "terrible",
        "boring",
        "moving",
        "plot",
        "acting",
        "the",
        "film",
        "was",
        "not",
        "really",
        "awful",
        "brilliant",
        "slow",
        "charming",
        "mess",
    ];
    (0..40)
        .map(|i| {
            let len = 1 + (i * 7) % 30;
            (0..len)
                .map(|j| words[(i * 3 + j * 5) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn close(a: &serde_json::Value, b: &Prediction, text: &str) {
    assert_eq!(a["label"], b.label.as_str(), "{text}");
    let score = a["score"].as_f64().unwrap();
    assert!(
        (score - f64::from(b.score)).abs() < 1e-4,
        "{text}: {score} vs {}",
        b.score
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mixed_requests_get_exactly_their_own_answers() {
    let server = Server::ready(&[
        "--max-batch",
        "16",
        "--max-wait-ms",
        "5",
        "--queue-capacity",
        "1000",
    ])
    .await;
    let classifier = Classifier::load(
        &Checkpoint::open(fixture()).unwrap(),
        &ClassifierOptions {
            threads: Some(1),
            ..ClassifierOptions::default()
        },
    )
    .unwrap();
    let texts = texts();
    let expected: HashMap<String, Prediction> = texts
        .iter()
        .map(|t| (t.clone(), classifier.classify(&[t]).unwrap().remove(0)))
        .collect();
    let labels: std::collections::HashSet<_> = expected.values().map(|p| p.label.clone()).collect();
    assert!(
        labels.len() > 1 || texts.len() < 2,
        "fixture predicts one label only: the test would prove less"
    );

    let addr = server.addr;
    let tasks: Vec<_> = (0..500usize)
        .map(|i| {
            let texts = texts.clone();
            tokio::spawn(async move {
                let picked: Vec<String> = if i % 3 == 0 {
                    (0..1 + i % 5)
                        .map(|k| texts[(i + k * 11) % texts.len()].clone())
                        .collect()
                } else {
                    vec![texts[i % texts.len()].clone()]
                };
                let body = if i % 3 == 0 {
                    json!({"inputs": picked})
                } else {
                    json!({"text": picked[0]})
                };
                let response = spawn_predict(addr, &body).await.unwrap();
                (picked, i % 3 == 0, response)
            })
        })
        .collect();
    for task in tasks {
        let (picked, batch, response) = task.await.unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        if batch {
            let answers = body.as_array().unwrap();
            assert_eq!(answers.len(), picked.len());
            for (answer, text) in answers.iter().zip(&picked) {
                close(answer, &expected[text], text);
            }
        } else {
            close(&body, &expected[&picked[0]], &picked[0]);
        }
    }
    let series = parse_metrics(&server.get("/metrics").await.text());
    let passes = metric(&series, "sentiment_batch_size_count", &[]);
    let texts_run = metric(&series, "sentiment_batch_size_sum", &[]);
    assert!(
        passes < texts_run,
        "no batching happened: {passes} passes for {texts_run} texts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_inputs_and_slow_clients_leave_it_healthy() {
    let server = Server::ready(&["--request-timeout-ms", "1500"]).await;
    let addr = server.addr;

    server
        .post_json("/predict", &[0xc3, 0x28, 0xa0, 0xa1, 0xff])
        .await
        .assert_error(400, "invalid_json");

    let mut huge = br#"{"text": ""#.to_vec();
    huge.resize(10 * 1024 * 1024, b'a');
    huge.extend_from_slice(br#""}"#);
    server
        .post_json("/predict", &huge)
        .await
        .assert_error(413, "payload_too_large");

    let long = vec!["wonderful"; 5000].join(" ");
    let truncated = server.predict(&json!({"text": long})).await;
    assert_eq!(truncated.status, 200, "{}", truncated.text());
    assert_eq!(truncated.json()["truncated"], true);
    let short = server.predict(&json!({"text": "wonderful"})).await.json();
    assert!(short.get("truncated").is_none(), "{short}");

    // Many clients that connect and dribble half a request, then stall.
    let mut slow = Vec::new();
    for i in 0..300 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let partial = if i % 2 == 0 {
                "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-le".to_owned()
            } else {
                "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"text\": \"sl".to_owned()
            };
            let _ = stream.write_all(partial.as_bytes()).await;
            slow.push(stream);
        }
    }
    assert!(
        slow.len() >= 250,
        "only {} slow clients connected",
        slow.len()
    );
    let started = Instant::now();
    assert_eq!(server.get("/healthz").await.status, 200);
    assert_eq!(server.get("/readyz").await.status, 200);
    assert_eq!(
        server.predict(&json!({"text": "still fine"})).await.status,
        200
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answers took {:?}",
        started.elapsed()
    );
    // Past the request timeout, a client stalled mid-body is answered and let go.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{\"te")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stalled, &mut answer),
    )
    .await;
    assert!(read.is_ok(), "a stalled upload was never cut off");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 504"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(slow);
    assert_eq!(
        server
            .predict(&json!({"text": "after the slow ones"}))
            .await
            .status,
        200
    );
    let series = parse_metrics(&server.get("/metrics").await.text());
    assert_eq!(metric(&series, "sentiment_ready", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_hang_up_are_dropped_before_inference() {
    let server = Server::ready(&[
        "--inference-delay-ms",
        "300",
        "--max-batch",
        "1",
        "--max-wait-ms",
        "0",
    ])
    .await;
    let addr = server.addr;
    // Occupies the worker for 300 ms.
    let busy = spawn_predict(addr, &json!({"text": "first"}));
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = br#"{"text": "gone"}"#;
        let head = format!(
            "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(stream);
    }
    assert_eq!(busy.await.unwrap().status, 200);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let series = parse_metrics(&server.get("/metrics").await.text());
        let dropped = metric(
            &series,
            "sentiment_dropped_requests_total",
            &["reason=\"client_gone\""],
        );
        if dropped >= 3.0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "hung-up clients were not dropped: {dropped}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_model_that_cannot_load_ends_the_process_with_an_error() {
    let missing = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sentiment-server"))
        .arg("--model-dir")
        .arg(missing.path().join("nothing-here"))
        .args(["--bind", "127.0.0.1:0", "--threads", "1"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("model load failed"), "{log}");
    assert!(log.contains("nothing-here"), "{log}");
}
