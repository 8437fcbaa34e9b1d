//! The router against backends that fail on purpose, all on loopback. Timing bounds
//! are generous: these machines are noisy.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sentiment_router::{Backend, Choice, RouteError, Router};
use serde_json::Value;

const TEXT: &str = r#"{"text":"a fine film"}"#;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_503s_then_an_answer_takes_three_attempts() {
    let lambda = backend(
        vec![
            Step::Reply(503, vec![("retry-after", "0")], r#"{"error":"overloaded"}"#),
            reply(503, r#"{"error":"overloaded"}"#),
        ],
        Step::Echo,
        Healthz::Absent,
    )
    .await;
    let (k8s, router) = healthy_k8s_and_router(&lambda).await;
    let r = predict(&router, "?backend=lambda", TEXT).await;
    assert_answered(&r, "lambda", 3);
    // The upstream's timing headers come through, and the body byte for byte.
    assert_eq!(header(&r, "x-inference-time"), "1.500");
    assert_eq!(header(&r, "x-queue-time"), "0.100");
    assert_eq!(header(&r, "x-total-time"), "1.700");
    assert_eq!(r.text().await.unwrap(), TEXT);
    assert_eq!(lambda.hits(), 3);
    assert_eq!(k8s.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_a_429_is_waited_out() {
    let k8s = backend(
        vec![Step::Reply(
            429,
            vec![("retry-after", "1"), ("content-type", "application/json")],
            r#"{"error":"throttled","detail":"slow down"}"#,
        )],
        reply(200, OK_BODY),
        Healthz::Up,
    )
    .await;
    let lambda = healthy(Healthz::Absent).await;
    let mut c = config(&lambda.url(), &k8s.url());
    c.retry.deadline = Duration::from_secs(8);
    let router = router(c).await;
    let started = Instant::now();
    let r = predict(&router, "?backend=k8s", TEXT).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-attempts"), "2");
    // The backoff alone would be at most 50 ms.
    assert!(
        took >= Duration::from_millis(1_000),
        "retried after {took:?}"
    );
    assert_eq!(r.text().await.unwrap(), OK_BODY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_is_retried() {
    let lambda = backend(vec![hang()], reply(200, OK_BODY), Healthz::Absent).await;
    let k8s = healthy(Healthz::Up).await;
    let mut c = config(&lambda.url(), &k8s.url());
    c.retry.attempt_timeout = Duration::from_millis(300);
    let router = router(c).await;
    let r = predict(&router, "?backend=lambda", TEXT).await;
    assert_answered(&r, "lambda", 2);
    assert_eq!(lambda.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_fails_over_from_a_hanging_backend() {
    let lambda = backend(vec![], hang(), Healthz::Absent).await;
    let k8s = backend(vec![], Step::Echo, Healthz::Up).await;
    let mut c = config(&lambda.url(), &k8s.url());
    c.retry.attempt_timeout = Duration::from_millis(300);
    let router = router(c).await;
    let r = predict(&router, "?backend=auto", TEXT).await;
    assert_answered(&r, "k8s", 2);
    assert_eq!(r.text().await.unwrap(), TEXT);
    assert_eq!(lambda.hits(), 1);
    let metrics = metrics(&router).await;
    assert!(
        metrics.contains(r#"router_failovers_total{backend="lambda",reason="timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_fails_over_from_a_dead_backend_without_a_failed_request() {
    let k8s = backend(vec![], Step::Echo, Healthz::Up).await;
    let router = router(config(&dead_url().await, &k8s.url())).await;
    let mut attempts = Vec::new();
    for i in 0..10 {
        let text = format!(r#"{{"text":"request {i}"}}"#);
        let r = predict(&router, "", &text).await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(header(&r, "x-backend"), "k8s");
        attempts.push(header(&r, "x-attempts"));
        assert_eq!(r.text().await.unwrap(), text);
    }
    // The first request finds Lambda refusing; the rest go to k8s first.
    assert_eq!(attempts[0], "2");
    assert!(attempts[1..].iter().all(|a| a == "1"), "{attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_fixed_backend_is_a_json_error_within_the_deadline() {
    let k8s = healthy(Healthz::Up).await;
    let mut c = config(&dead_url().await, &k8s.url());
    c.retry.deadline = Duration::from_secs(3);
    let router = router(c).await;
    let started = Instant::now();
    let r = predict(&router, "?backend=lambda", TEXT).await;
    let took = started.elapsed();
    assert!(
        r.status() == 502 || r.status() == 504,
        "status {}",
        r.status()
    );
    assert!(
        took < Duration::from_secs(3) + Duration::from_millis(1_500),
        "{took:?}"
    );
    assert_eq!(header(&r, "x-backend"), "lambda");
    assert_eq!(header(&r, "content-type"), "application/json");
    let body = json(&r.text().await.unwrap());
    let detail = body["detail"].as_str().unwrap();
    assert!(
        body["error"] == "backend_unreachable" || body["error"] == "deadline_exceeded",
        "{body}"
    );
    assert!(
        detail.contains("lambda") && detail.contains("4 attempts"),
        "{detail}"
    );
    assert_eq!(k8s.hits(), 0, "a fixed backend never fails over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_is_not_retried() {
    const INVALID: &str =
        r#"{"error":"invalid_input","detail":"text is empty or whitespace-only"}"#;
    let lambda = backend(vec![], reply(422, INVALID), Healthz::Absent).await;
    let (k8s, router) = healthy_k8s_and_router(&lambda).await;
    for query in ["?backend=lambda", "?backend=auto"] {
        let r = predict(&router, query, r#"{"text":"   "}"#).await;
        assert_eq!(r.status(), 422);
        assert_eq!(header(&r, "x-attempts"), "1");
        assert_eq!(header(&r, "x-backend"), "lambda");
        assert_eq!(r.text().await.unwrap(), INVALID);
    }
    assert_eq!(lambda.hits(), 2);
    assert_eq!(k8s.hits(), 0);
}

fn lambda_throttle() -> Step {
    Step::Reply(
        500,
        vec![
            ("content-type", "application/json"),
            ("x-lambda-error-type", "TooManyRequestsException"),
            ("x-lambda-error", "Rate Exceeded."),
        ],
        r#"{"message":"Internal Server Error"}"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_front_throttle_is_retried_and_failed_over() {
    // Fixed: retried on Lambda.
    let lambda = backend(
        vec![lambda_throttle()],
        reply(200, OK_BODY),
        Healthz::Absent,
    )
    .await;
    let (k8s, router1) = healthy_k8s_and_router(&lambda).await;
    let r = predict(&router1, "?backend=lambda", TEXT).await;
    assert_answered(&r, "lambda", 2);

    // Auto: failed over to k8s at once.
    let throttled = backend(vec![], lambda_throttle(), Healthz::Absent).await;
    let router2 = router(config(&throttled.url(), &k8s.url())).await;
    let r = predict(&router2, "?backend=auto", TEXT).await;
    assert_answered(&r, "k8s", 2);
    let metrics = metrics(&router2).await;
    assert!(
        metrics.contains(r#"router_failovers_total{backend="lambda",reason="throttled"} 1"#),
        "{metrics}"
    );

    // A 500 that is not a throttle is an answer, passed on at once.
    let broken = backend(
        vec![],
        Step::Reply(
            500,
            vec![("x-lambda-error-type", "Runtime.ExitError")],
            r#"{"message":"Internal Server Error"}"#,
        ),
        Healthz::Absent,
    )
    .await;
    let router3 = router(config(&broken.url(), &k8s.url())).await;
    let r = predict(&router3, "?backend=auto", TEXT).await;
    assert_eq!(r.status(), 500);
    assert_eq!(header(&r, "x-attempts"), "1");
    assert_eq!(header(&r, "x-lambda-error-type"), "Runtime.ExitError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_is_never_exceeded_by_more_than_one_attempt_timeout() {
    let lambda = backend(vec![], hang(), Healthz::Absent).await;
    // Asks for a wait far past the deadline: not honoured, not slept.
    let k8s = backend(
        vec![],
        Step::Reply(
            503,
            vec![("retry-after", "30")],
            r#"{"error":"overloaded"}"#,
        ),
        Healthz::Up,
    )
    .await;
    let deadline = Duration::from_millis(1_500);
    let attempt_timeout = Duration::from_millis(400);
    let slack = Duration::from_millis(1_500);
    let mut c = config(&lambda.url(), &k8s.url());
    c.retry.deadline = deadline;
    c.retry.attempt_timeout = attempt_timeout;
    c.retry.max_attempts = 1_000;
    let router = router(c.clone()).await;
    for query in ["?backend=lambda", "?backend=k8s", "?backend=auto"] {
        let started = Instant::now();
        let r = predict(&router, query, TEXT).await;
        let took = started.elapsed();
        assert_eq!(r.status(), 504, "{query}");
        assert!(
            took <= deadline + attempt_timeout + slack,
            "{query}: {took:?}"
        );
        let body = json(&r.text().await.unwrap());
        assert_eq!(body["error"], "deadline_exceeded", "{query}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("attempts"),
            "{body}"
        );
    }

    // The library says the same without the server.
    let lib = Router::new(c).unwrap();
    let started = Instant::now();
    let e = lib
        .predict(Choice::Fixed(Backend::Lambda), TEXT.into(), None)
        .await
        .unwrap_err();
    assert!(started.elapsed() <= deadline + attempt_timeout + slack);
    assert!(
        matches!(
            e,
            RouteError::DeadlineExceeded {
                backend: Backend::Lambda,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.attempts() >= 2, "{e:?}");
    assert_eq!(e.status(), 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_mix_up_answers() {
    // Echo backends that answer after a little while, so requests overlap.
    let slow_echo = || Step::After(Duration::from_millis(20), Box::new(Step::Echo));
    let lambda = backend(vec![], slow_echo(), Healthz::Absent).await;
    let k8s = backend(vec![], slow_echo(), Healthz::Up).await;
    let mut c = config(&lambda.url(), &k8s.url());
    c.weights = Some("lambda=1,k8s=1".parse().unwrap());
    let router = router(c).await;
    let queries = ["?backend=lambda", "?backend=k8s", "?backend=auto"];
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let addr = router.addr;
            tokio::spawn(async move {
                let text = format!(r#"{{"text":"request number {i}"}}"#);
                let r = client()
                    .post(format!("http://{addr}/predict{}", queries[i % 3]))
                    .header("content-type", "application/json")
                    .body(text.clone())
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let backend = header(&r, "x-backend");
                (i, text, status, backend, r.text().await.unwrap())
            })
        })
        .collect();
    for task in tasks {
        let (i, sent, status, backend, got) = task.await.unwrap();
        assert_eq!(status, 200, "request {i}");
        assert_eq!(got, sent, "request {i} got another request's answer");
        match queries[i % 3] {
            "?backend=lambda" => assert_eq!(backend, "lambda"),
            "?backend=k8s" => assert_eq!(backend, "k8s"),
            _ => assert!(backend == "lambda" || backend == "k8s"),
        }
    }
    assert_eq!(lambda.hits() + k8s.hits(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let lambda = healthy(Healthz::Absent).await;
    let k8s = healthy(Healthz::Up).await;
    let mut c = config(&lambda.url(), &k8s.url());
    c.max_body_bytes = 1_024;
    let router = router(c).await;
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(2_000));
    let r = predict(&router, "", &big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(json(&r.text().await.unwrap())["error"], "payload_too_large");

    // Bodies bigger than the socket buffers: the sender, still writing, must get the
    // 413 and not a reset (the body is read and dropped, not left on the socket).
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(4 << 20));
    for _ in 0..5 {
        let r = predict(&router, "", &huge).await;
        assert_eq!(r.status(), 413);
        assert_eq!(json(&r.text().await.unwrap())["error"], "payload_too_large");
    }

    // Chunked, with no Content-Length to refuse up front.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let head = "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // At the limit it goes through.
    let fits = format!(r#"{{"text":"{}"}}"#, "x".repeat(1_000));
    assert_eq!(predict(&router, "", &fits).await.status(), 200);
    assert_eq!(lambda.hits() + k8s.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_when_both_backends_are_down() {
    let mut c = config(&dead_url().await, &dead_url().await);
    c.health.probe_interval = Some(Duration::from_millis(100));
    let router = router(c).await;
    let url = format!("http://{}/readyz", router.addr);
    let started = Instant::now();
    let body = loop {
        let r = client().get(&url).send().await.unwrap();
        if r.status() == 503 {
            break json(&r.text().await.unwrap());
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["backends"]["lambda"]["healthy"], false, "{body}");
    assert_eq!(body["backends"]["k8s"]["healthy"], false, "{body}");
    // Liveness does not depend on the backends.
    let r = client()
        .get(format!("http://{}/healthz", router.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_mark_a_failing_k8s_down_and_leave_a_lambda_without_healthz_up() {
    let lambda = healthy(Healthz::Absent).await;
    let k8s = healthy(Healthz::Failing).await;
    let mut c = config(&lambda.url(), &k8s.url());
    c.health.probe_interval = Some(Duration::from_millis(100));
    let router = router(c).await;
    let url = format!("http://{}/readyz", router.addr);
    let started = Instant::now();
    let body = loop {
        let body = json(
            &client()
                .get(&url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
        if body["backends"]["k8s"]["probe"] == "down"
            && body["backends"]["lambda"]["probe"] == "absent"
        {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["backends"]["lambda"]["healthy"], true);
    assert_eq!(body["backends"]["k8s"]["healthy"], false);
    // auto avoids the backend whose probe fails.
    for _ in 0..3 {
        let r = predict(&router, "?backend=auto", TEXT).await;
        assert_eq!(header(&r, "x-backend"), "lambda");
    }
    assert_eq!(k8s.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_named_families() {
    let lambda = backend(vec![reply(503, "{}")], reply(200, OK_BODY), Healthz::Absent).await;
    let (_k8s, router) = healthy_k8s_and_router(&lambda).await;
    // Lambda (first under auto on a tie) answers 503: retried on k8s.
    let r = predict(&router, "?backend=auto", TEXT).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-backend"), "k8s");
    let r = client()
        .get(format!("http://{}/metrics", router.addr))
        .send()
        .await
        .unwrap();
    assert!(header(&r, "content-type").starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    for family in [
        r#"router_requests_total{backend="k8s",status="200"} 1"#,
        "# TYPE router_attempts histogram",
        r#"router_attempts_bucket{le="1.0"} 0"#,
        r#"router_attempts_bucket{le="2.0"} 1"#,
        r#"router_retries_total{backend="lambda",reason="unavailable"} 1"#,
        r#"router_failovers_total{backend="lambda",reason="unavailable"} 1"#,
        "# TYPE router_upstream_latency_seconds histogram",
        r#"router_upstream_latency_seconds_count{backend="lambda"} 1"#,
        r#"router_upstream_latency_seconds_count{backend="k8s"} 1"#,
        r#"router_backend_healthy{backend="k8s"} 1"#,
        "# EOF",
    ] {
        assert!(text.contains(family), "no {family:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_routes_and_methods_are_json_errors() {
    let lambda = healthy(Healthz::Absent).await;
    let (k8s, router) = healthy_k8s_and_router(&lambda).await;
    let base = format!("http://{}", router.addr);
    let r = client().get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json(&r.text().await.unwrap())["error"], "not_found");
    let r = client()
        .get(format!("{base}/predict"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), "POST");
    assert_eq!(
        json(&r.text().await.unwrap())["error"],
        "method_not_allowed"
    );
    let r = predict(&router, "?backend=gpu", TEXT).await;
    assert_eq!(r.status(), 422);
    assert_eq!(json(&r.text().await.unwrap())["error"], "invalid_input");
    let r = client()
        .post(format!("{base}/predict"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(lambda.hits() + k8s.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    let slow = Step::After(Duration::from_millis(800), Box::new(reply(200, OK_BODY)));
    let lambda = backend(vec![], slow, Healthz::Absent).await;
    let (_k8s, router) = healthy_k8s_and_router(&lambda).await;
    let addr = router.addr;
    let in_flight = tokio::spawn(async move {
        client()
            .post(format!("http://{addr}/predict?backend=lambda"))
            .body(TEXT)
            .send()
            .await
    });
    // Let the request reach the backend, then stop.
    let started = Instant::now();
    while lambda.hits() == 0 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    router.shutdown().await;
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was cut off");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), OK_BODY);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_answers_without_the_server() {
    let lambda = healthy(Healthz::Absent).await;
    let k8s = backend(vec![], Step::Echo, Healthz::Up).await;
    let router = Router::new(config(&lambda.url(), &k8s.url())).unwrap();
    let answer = router
        .predict(
            Choice::Fixed(Backend::K8s),
            TEXT.into(),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.backend, Backend::K8s);
    assert_eq!(answer.attempts, 1);
    assert_eq!(answer.body, TEXT.as_bytes());
    assert_eq!(answer.headers["x-backend"], "k8s");
    assert_eq!(answer.headers["x-attempts"], "1");
    assert_eq!(answer.headers["x-inference-time"], "1.500");
    assert!(Router::new(config("ftp://x", &k8s.url())).is_err());
}
