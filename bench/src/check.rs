//! `bench check`: the integration suite against live endpoints (the seed's
//! run-tests). The same assertions run against the local default and AWS: known texts
//! get the deployed model's answers, a batch answers in order, every class of bad
//! input gets its 4xx JSON error, the probes and `/metrics` answer, the timing headers
//! are there, and the router picks and fails over.
//!
//! What each backend is decides what it is asked: `lambda` sits behind API Gateway,
//! which routes only `POST /predict` and answers everything else itself
//! (`404 {"message":"Not Found"}`); `k8s` is the server with its probes and metrics;
//! `router` is the router's front.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use sentiment_api::{MAX_BATCH_INPUTS, MAX_TEXT_BYTES, Prediction};
use sentiment_router::{Backend, Choice, Config, Router, Weights};
use serde::Serialize;
use serde_json::{Value, json};

use crate::targets::Target;

/// The built-in known texts (`bench/check/texts.txt`): `make check` writes their
/// expected answers with `model-cache predict` on the deployed checkpoint.
pub const KNOWN_TEXTS: &str = include_str!("../check/texts.txt");

/// Above the server's and the router's default body limit (1 MiB).
const OVER_SERVER_BODY_LIMIT: usize = 2 << 20;
/// Above Lambda's 6 MB synchronous invocation payload.
const OVER_LAMBDA_PAYLOAD_LIMIT: usize = 6_500_000;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not asked of this backend (API Gateway has no `/healthz` route, say).
    Skip,
}

/// One check against one backend.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub backend: String,
    pub check: String,
    pub verdict: Verdict,
    pub detail: String,
}

/// What `bench check` runs against.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub targets: Vec<Target>,
    /// The known texts, in order.
    pub texts: Vec<String>,
    /// The model's answer to each text; without it, the backends are compared with
    /// each other only.
    pub expected: Option<Vec<Prediction>>,
    /// Largest accepted difference of a score from the expected one (the checkpoint
    /// may be served in f16 on one side).
    pub score_tolerance: f32,
    pub timeout: Duration,
}

/// The non-blank lines of a texts file, as `model-cache predict` reads them.
pub fn parse_texts(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The JSON lines `model-cache predict` wrote, one per text.
pub fn read_expected(path: &Path, texts: usize) -> anyhow::Result<Vec<Prediction>> {
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("reading the expected answers {}", path.display()))?;
    let expected = raw
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Prediction>(l).with_context(|| {
                format!(
                    "{} line {}: not a prediction {{\"label\", \"score\"}}",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if expected.len() != texts {
        bail!(
            "{} has {} answers for {texts} texts: write it with `model-cache predict` on the same texts",
            path.display(),
            expected.len()
        );
    }
    Ok(expected)
}

/// What sits behind a target's URL, which decides what it is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    ApiGateway,
    Server,
    Router,
}

impl Front {
    fn of(name: &str) -> Self {
        match name {
            "lambda" => Front::ApiGateway,
            "router" => Front::Router,
            _ => Front::Server,
        }
    }
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The start of the body, for messages.
    fn excerpt(&self) -> String {
        let s = String::from_utf8_lossy(&self.body);
        let s = s.trim();
        match s.char_indices().nth(160) {
            Some((at, _)) => format!("{}…", &s[..at]),
            None => s.to_string(),
        }
    }
}

struct Checker<'a> {
    client: &'a reqwest::Client,
    target: &'a Target,
    front: Front,
    outcomes: Vec<Outcome>,
}

impl Checker<'_> {
    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.target.url.trim_end_matches('/'))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let mut req = self.client.request(method, self.url(path));
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        let r = req.send().await.map_err(|e| describe(&e))?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.map_err(|e| describe(&e))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<Reply, String> {
        let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        self.send(reqwest::Method::POST, path, Some("application/json"), bytes)
            .await
    }

    fn record(&mut self, check: impl Into<String>, result: Result<String, String>) {
        let (verdict, detail) = match result {
            Ok(d) => (Verdict::Pass, d),
            Err(d) => (Verdict::Fail, d),
        };
        self.outcomes.push(Outcome {
            backend: self.target.name.clone(),
            check: check.into(),
            verdict,
            detail,
        });
    }

    fn skip(&mut self, check: &str, why: &str) {
        self.outcomes.push(Outcome {
            backend: self.target.name.clone(),
            check: check.into(),
            verdict: Verdict::Skip,
            detail: why.into(),
        });
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut msg = format!("request {kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// Short form of a text for check names.
fn label_of(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= 6 {
        format!("{text:?}")
    } else {
        format!("\"{} …\" ({} words)", words[..5].join(" "), words.len())
    }
}

/// Compares an answer with the expected prediction.
fn matches(got: &Prediction, want: &Prediction, tolerance: f32) -> Result<(), String> {
    if got.label != want.label {
        return Err(format!("label {}, want {}", got.label, want.label));
    }
    if (got.score - want.score).abs() > tolerance {
        return Err(format!(
            "score {}, want {} (± {tolerance})",
            got.score, want.score
        ));
    }
    if got.truncated != want.truncated {
        return Err(format!(
            "truncated {}, want {}",
            got.truncated, want.truncated
        ));
    }
    Ok(())
}

/// A single prediction, or why the reply is not one.
fn prediction(reply: &Result<Reply, String>) -> Result<Prediction, String> {
    let r = reply.as_ref().map_err(Clone::clone)?;
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.excerpt()));
    }
    serde_json::from_slice::<Prediction>(&r.body)
        .map_err(|e| format!("200 but not a prediction ({e}): {}", r.excerpt()))
}

/// Whether a prediction is plausible on its own (a label, a probability of the
/// arg-max class of two).
fn plausible(p: &Prediction) -> Result<(), String> {
    if p.label.trim().is_empty() {
        return Err("empty label".into());
    }
    if !(0.0..=1.0).contains(&p.score) {
        return Err(format!("score {} is not a probability", p.score));
    }
    Ok(())
}

/// One class of bad input: what is sent, what must come back.
struct BadInput {
    name: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// The `error` field of the JSON body; `None` where the answer comes from API
    /// Gateway itself (`{"message": ...}`).
    error: Option<&'static str>,
}

fn bad_inputs(front: Front) -> Vec<BadInput> {
    let json = Some("application/json");
    let v = |v: Value| serde_json::to_vec(&v).expect("serializes");
    let mut cases = vec![
        BadInput {
            name: "invalid_json",
            content_type: json,
            body: br#"{"text": "unterminated"#.to_vec(),
            status: 400,
            error: Some("invalid_json"),
        },
        BadInput {
            name: "wrong_shape",
            content_type: json,
            body: v(json!({"txt": "a field of another name"})),
            status: 422,
            error: Some("invalid_input"),
        },
        BadInput {
            name: "text_not_a_string",
            content_type: json,
            body: v(json!({"text": 5})),
            status: 422,
            error: Some("invalid_input"),
        },
        BadInput {
            name: "blank_text",
            content_type: json,
            body: v(json!({"text": "   "})),
            status: 422,
            error: Some("invalid_input"),
        },
        BadInput {
            name: "empty_batch",
            content_type: json,
            body: v(json!({"inputs": []})),
            status: 422,
            error: Some("invalid_input"),
        },
        BadInput {
            name: "batch_over_limit",
            content_type: json,
            body: v(json!({"inputs": vec!["fine"; MAX_BATCH_INPUTS + 1]})),
            status: 422,
            error: Some("invalid_input"),
        },
        BadInput {
            name: "text_over_limit",
            content_type: json,
            body: v(json!({"text": "a".repeat(MAX_TEXT_BYTES + 1)})),
            status: 422,
            error: Some("invalid_input"),
        },
        BadInput {
            name: "wrong_content_type",
            content_type: Some("text/plain"),
            body: v(json!({"text": "a wonderful film"})),
            status: 415,
            error: Some("unsupported_media_type"),
        },
    ];
    match front {
        Front::ApiGateway => cases.push(BadInput {
            name: "payload_over_lambda_limit",
            content_type: json,
            body: v(json!({"text": "a".repeat(OVER_LAMBDA_PAYLOAD_LIMIT)})),
            status: 413,
            error: None,
        }),
        Front::Server | Front::Router => {
            cases.push(BadInput {
                name: "body_over_limit",
                content_type: json,
                body: v(json!({"text": "a".repeat(OVER_SERVER_BODY_LIMIT)})),
                status: 413,
                error: Some("payload_too_large"),
            });
            cases.push(BadInput {
                name: "not_utf8",
                content_type: json,
                body: b"{\"text\": \"\xff\xfe\"}".to_vec(),
                status: 400,
                error: Some("invalid_json"),
            });
        }
    }
    cases
}

/// Whether a reply is the expected error.
fn is_error(
    reply: &Result<Reply, String>,
    status: u16,
    error: Option<&str>,
) -> Result<String, String> {
    let r = reply.as_ref().map_err(Clone::clone)?;
    if r.status != status {
        return Err(format!(
            "status {}, want {status}: {}",
            r.status,
            r.excerpt()
        ));
    }
    let Some(body) = r.json() else {
        return Err(format!("{status} without a JSON body: {}", r.excerpt()));
    };
    match error {
        Some(kind) => {
            let got = body.get("error").and_then(Value::as_str);
            let detail = body.get("detail").and_then(Value::as_str).unwrap_or("");
            if got != Some(kind) {
                return Err(format!("error {got:?}, want {kind:?}: {}", r.excerpt()));
            }
            if detail.trim().is_empty() {
                return Err(format!("{status} {kind} without a detail"));
            }
            Ok(format!("{status} {kind}: {detail}"))
        }
        None => match body.get("message").and_then(Value::as_str) {
            Some(m) => Ok(format!("{status} {{\"message\": {m:?}}}")),
            None => Err(format!(
                "{status} without API Gateway's message: {}",
                r.excerpt()
            )),
        },
    }
}

/// Runs every check against every target; the outcomes in the order they ran.
pub async fn run(cfg: &CheckConfig) -> anyhow::Result<Vec<Outcome>> {
    if cfg.texts.is_empty() {
        bail!("no known texts to check");
    }
    let client = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .build()
        .context("building the HTTP client")?;
    let mut outcomes = Vec::new();
    // Each backend's answer to each known text, for comparing backends with each other.
    let mut answers: BTreeMap<String, Vec<Option<Prediction>>> = BTreeMap::new();
    for target in &cfg.targets {
        let mut c = Checker {
            client: &client,
            target,
            front: Front::of(&target.name),
            outcomes: Vec::new(),
        };
        let got = known_texts(&mut c, cfg).await;
        batch(&mut c, cfg, &got).await;
        answers.insert(target.name.clone(), got);
        for case in bad_inputs(c.front) {
            let reply = c
                .send(
                    reqwest::Method::POST,
                    "/predict",
                    case.content_type,
                    case.body,
                )
                .await;
            c.record(
                format!("bad input {}", case.name),
                is_error(&reply, case.status, case.error),
            );
        }
        routes(&mut c).await;
        probes(&mut c).await;
        timing_headers(&mut c, cfg).await;
        if c.front == Front::Router {
            router_choices(&mut c, cfg).await;
        }
        outcomes.append(&mut c.outcomes);
    }
    outcomes.extend(agreement(cfg, &answers));
    outcomes.extend(failover(cfg).await);
    Ok(outcomes)
}

async fn known_texts(c: &mut Checker<'_>, cfg: &CheckConfig) -> Vec<Option<Prediction>> {
    let mut got = Vec::with_capacity(cfg.texts.len());
    for (i, text) in cfg.texts.iter().enumerate() {
        let reply = c.post_json("/predict", &json!({ "text": text })).await;
        let answer = prediction(&reply);
        let verdict = answer.as_ref().map_err(Clone::clone).and_then(|p| {
            match cfg.expected.as_ref().map(|e| &e[i]) {
                Some(want) => matches(p, want, cfg.score_tolerance),
                None => plausible(p),
            }
            .map(|()| format!("{} {}", p.label, p.score))
        });
        c.record(format!("predict {}", label_of(text)), verdict);
        got.push(answer.ok());
    }
    got
}

/// Every known text in one `inputs` request: answered as a list in request order,
/// the same as one by one.
async fn batch(c: &mut Checker<'_>, cfg: &CheckConfig, singles: &[Option<Prediction>]) {
    let reply = c
        .post_json("/predict", &json!({ "inputs": cfg.texts }))
        .await;
    let verdict = (|| {
        let r = reply.as_ref().map_err(Clone::clone)?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.excerpt()));
        }
        let list: Vec<Prediction> = serde_json::from_slice(&r.body)
            .map_err(|e| format!("200 but not a list of predictions ({e}): {}", r.excerpt()))?;
        if list.len() != cfg.texts.len() {
            return Err(format!(
                "{} answers for {} texts",
                list.len(),
                cfg.texts.len()
            ));
        }
        for (i, p) in list.iter().enumerate() {
            let want = match (&cfg.expected, &singles[i]) {
                (Some(e), _) => &e[i],
                (None, Some(single)) => single,
                (None, None) => continue,
            };
            matches(p, want, cfg.score_tolerance).map_err(|e| format!("inputs[{i}]: {e}"))?;
        }
        Ok(format!("{} texts answered in order", list.len()))
    })();
    c.record("batch", verdict);
}

async fn routes(c: &mut Checker<'_>) {
    let get_predict = c
        .send(reqwest::Method::GET, "/predict", None, Vec::new())
        .await;
    let unknown = c
        .send(reqwest::Method::GET, "/no-such-route", None, Vec::new())
        .await;
    match c.front {
        // API Gateway routes only `POST /predict`; the rest is its own 404.
        Front::ApiGateway => {
            c.record("GET /predict", is_error(&get_predict, 404, None));
            c.record("unknown route", is_error(&unknown, 404, None));
        }
        Front::Server | Front::Router => {
            let verdict = is_error(&get_predict, 405, Some("method_not_allowed")).and_then(|d| {
                let allow = get_predict.as_ref().ok().and_then(|r| r.header("allow"));
                match allow {
                    Some(a) if a.contains("POST") => Ok(format!("{d} (allow: {a})")),
                    other => Err(format!("405 with allow {other:?}, want POST")),
                }
            });
            c.record("GET /predict", verdict);
            c.record("unknown route", is_error(&unknown, 404, Some("not_found")));
        }
    }
}

/// The metric families each front's `/metrics` must expose.
fn metric_families(front: Front) -> &'static [&'static str] {
    match front {
        Front::Server => &[
            "sentiment_http_requests_total",
            "sentiment_http_request_duration_seconds",
            "sentiment_queue_duration_seconds",
            "sentiment_inference_duration_seconds",
            "sentiment_batch_size",
            "sentiment_queue_depth",
            "sentiment_ready",
        ],
        Front::Router => &[
            "router_requests_total",
            "router_attempts",
            "router_upstream_latency_seconds",
            "router_backend_healthy",
        ],
        Front::ApiGateway => &[],
    }
}

async fn probes(c: &mut Checker<'_>) {
    if c.front == Front::ApiGateway {
        let why = "API Gateway routes only POST /predict (the function's health is in CloudWatch: bench metrics)";
        c.skip("GET /healthz", why);
        c.skip("GET /metrics", why);
        return;
    }
    let health = c
        .send(reqwest::Method::GET, "/healthz", None, Vec::new())
        .await;
    let verdict = match &health {
        Ok(r) if r.status == 200 => Ok(format!("200 {}", r.excerpt())),
        Ok(r) => Err(format!("status {}: {}", r.status, r.excerpt())),
        Err(e) => Err(e.clone()),
    };
    c.record("GET /healthz", verdict);
    let metrics = c
        .send(reqwest::Method::GET, "/metrics", None, Vec::new())
        .await;
    let verdict = (|| {
        let r = metrics.as_ref().map_err(Clone::clone)?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.excerpt()));
        }
        let text = String::from_utf8_lossy(&r.body);
        let families = metric_families(c.front);
        let missing: Vec<&str> = families
            .iter()
            .copied()
            .filter(|f| !text.lines().any(|l| l.starts_with(f)))
            .collect();
        if !missing.is_empty() {
            return Err(format!("no {} in /metrics", missing.join(", ")));
        }
        Ok(format!("{} metric families present", families.len()))
    })();
    c.record("GET /metrics", verdict);
}

/// The server's `x-queue-time`, `x-inference-time`, `x-total-time`: numbers, with the
/// parts inside the whole. Through the router, on an answer from Kubernetes.
async fn timing_headers(c: &mut Checker<'_>, cfg: &CheckConfig) {
    let path = match c.front {
        Front::Server => "/predict",
        Front::Router => "/predict?backend=k8s",
        Front::ApiGateway => {
            c.skip(
                "timing headers",
                "the Lambda's time is in its REPORT lines (bench metrics), not in headers",
            );
            return;
        }
    };
    let reply = c.post_json(path, &json!({ "text": cfg.texts[0] })).await;
    let verdict = (|| {
        let r = reply.as_ref().map_err(Clone::clone)?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.excerpt()));
        }
        let ms = |name: &str| -> Result<f64, String> {
            let v = r.header(name).ok_or_else(|| format!("no {name} header"))?;
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{name}: {v:?} is not a number of milliseconds"))
        };
        let queue = ms(sentiment_api::QUEUE_TIME_HEADER)?;
        let inference = ms(sentiment_api::INFERENCE_TIME_HEADER)?;
        let total = ms(sentiment_api::TOTAL_TIME_HEADER)?;
        // The headers are rounded; allow for it.
        if queue + inference > total + 1.0 {
            return Err(format!(
                "queue {queue} ms + inference {inference} ms is more than the total {total} ms"
            ));
        }
        Ok(format!(
            "queue {queue} ms, inference {inference} ms, total {total} ms"
        ))
    })();
    c.record("timing headers", verdict);
}

/// The router's `?backend=` choices answer from the backend asked for, with
/// `x-backend` and `x-attempts`; an unknown choice is a 422.
async fn router_choices(c: &mut Checker<'_>, cfg: &CheckConfig) {
    for choice in ["lambda", "k8s", "auto"] {
        let reply = c
            .post_json(
                &format!("/predict?backend={choice}"),
                &json!({ "text": cfg.texts[0] }),
            )
            .await;
        let verdict = prediction(&reply).and_then(|p| {
            let r = reply.as_ref().expect("a prediction came from a reply");
            let backend = r.header(sentiment_router::BACKEND_HEADER);
            let attempts = r.header(sentiment_router::ATTEMPTS_HEADER);
            if attempts
                .and_then(|a| a.parse::<u32>().ok())
                .is_none_or(|a| a == 0)
            {
                return Err(format!("x-attempts is {attempts:?}"));
            }
            if choice != "auto" && backend != Some(choice) {
                return Err(format!("answered by {backend:?}"));
            }
            if let Some(want) = &cfg.expected {
                matches(&p, &want[0], cfg.score_tolerance)?;
            }
            Ok(format!(
                "{} from {}, {} attempt(s)",
                p.label,
                backend.unwrap_or("?"),
                attempts.unwrap_or("?")
            ))
        });
        c.record(format!("router ?backend={choice}"), verdict);
    }
    let reply = c
        .post_json("/predict?backend=nowhere", &json!({ "text": cfg.texts[0] }))
        .await;
    c.record(
        "router ?backend=nowhere",
        is_error(&reply, 422, Some("invalid_input")),
    );
}

/// Without an expectation file: every backend gives the same answer to each text.
fn agreement(
    cfg: &CheckConfig,
    answers: &BTreeMap<String, Vec<Option<Prediction>>>,
) -> Vec<Outcome> {
    if cfg.expected.is_some() || answers.len() < 2 {
        return Vec::new();
    }
    let mut disagreements = Vec::new();
    for (i, text) in cfg.texts.iter().enumerate() {
        let given: Vec<(&String, &Prediction)> = answers
            .iter()
            .filter_map(|(b, a)| a[i].as_ref().map(|p| (b, p)))
            .collect();
        if let Some((first_backend, first)) = given.first() {
            for (b, p) in &given[1..] {
                if let Err(e) = matches(p, first, cfg.score_tolerance) {
                    disagreements.push(format!("{}: {b} {e} (as {first_backend})", label_of(text)));
                }
            }
        }
    }
    vec![Outcome {
        backend: "all".into(),
        check: "backends agree".into(),
        verdict: if disagreements.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: if disagreements.is_empty() {
            format!(
                "{} texts answered alike by {} (no --expect: not compared with the model)",
                cfg.texts.len(),
                answers.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        } else {
            disagreements.join("; ")
        },
    }]
}

/// A port nothing listens on: bound, then let go.
fn dead_url() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(format!("http://127.0.0.1:{port}"))
}

/// The router's failover, with this build's router library in front of the live
/// backends: one of them replaced by a dead address and weighted to get every first
/// attempt, every request must still be answered by the other one.
async fn failover(cfg: &CheckConfig) -> Vec<Outcome> {
    let url = |name: &str| {
        cfg.targets
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.url.clone())
    };
    let (Some(lambda), Some(k8s)) = (url("lambda"), url("k8s")) else {
        return Vec::new();
    };
    let mut outcomes = Vec::new();
    for dead in [Backend::Lambda, Backend::K8s] {
        let verdict = async {
            let dead_url = dead_url().map_err(|e| e.to_string())?;
            let mut config = match dead {
                Backend::Lambda => Config::new(dead_url, k8s.clone()),
                Backend::K8s => Config::new(lambda.clone(), dead_url),
            };
            config.weights = Some(match dead {
                Backend::Lambda => Weights { lambda: 1, k8s: 0 },
                Backend::K8s => Weights { lambda: 0, k8s: 1 },
            });
            let router = Router::new(config).map_err(|e| e.to_string())?;
            let body = serde_json::to_vec(&json!({ "text": cfg.texts[0] })).expect("serializes");
            let mut attempts = Vec::new();
            for _ in 0..3 {
                let answer = router
                    .predict(
                        Choice::Auto,
                        Bytes::from(body.clone()),
                        Some("application/json"),
                    )
                    .await
                    .map_err(|e| format!("no answer: {e}"))?;
                if answer.status != 200 || answer.backend == dead {
                    return Err(format!(
                        "{} from {}: {}",
                        answer.status,
                        answer.backend,
                        String::from_utf8_lossy(&answer.body)
                    ));
                }
                attempts.push(answer.attempts);
            }
            if attempts[0] < 2 {
                return Err(format!(
                    "the first request was not tried on {dead} first (attempts {attempts:?})"
                ));
            }
            Ok(format!(
                "3 of 3 answered by the other backend (attempts {attempts:?})"
            ))
        }
        .await;
        outcomes.push(Outcome {
            backend: "router".into(),
            check: format!("failover with {dead} down"),
            verdict: if verdict.is_ok() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            detail: verdict.unwrap_or_else(|e| e),
        });
    }
    outcomes
}

/// `12 passed, 1 failed, 3 skipped`.
pub fn summary(outcomes: &[Outcome]) -> String {
    let count = |v| outcomes.iter().filter(|o| o.verdict == v).count();
    format!(
        "{} passed, {} failed, {} skipped",
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Skip)
    )
}

/// Whether every check passed or was skipped.
pub fn all_passed(outcomes: &[Outcome]) -> bool {
    !outcomes.iter().any(|o| o.verdict == Verdict::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(label: &str, score: f32) -> Prediction {
        Prediction {
            label: label.into(),
            score,
            truncated: false,
        }
    }

    #[test]
    fn the_built_in_texts_are_what_model_cache_predict_reads() {
        let texts = parse_texts(KNOWN_TEXTS);
        assert_eq!(texts.len(), 7);
        assert_eq!(texts[0], "a wonderful film");
        // The last one is past the model's 512 tokens, so truncation is checked too.
        assert!(texts[6].split_whitespace().count() > 512);
        assert!(texts.iter().all(|t| t.len() <= MAX_TEXT_BYTES));
    }

    #[test]
    fn answers_match_on_label_score_and_truncation() {
        assert!(matches(&p("POSITIVE", 0.9), &p("POSITIVE", 0.90001), 1e-4).is_ok());
        assert!(matches(&p("NEGATIVE", 0.9), &p("POSITIVE", 0.9), 1e-4).is_err());
        assert!(matches(&p("POSITIVE", 0.8), &p("POSITIVE", 0.9), 1e-4).is_err());
        let mut cut = p("POSITIVE", 0.9);
        cut.truncated = true;
        assert!(matches(&cut, &p("POSITIVE", 0.9), 1e-4).is_err());
    }

    #[test]
    fn expected_answers_must_cover_every_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("expected.jsonl");
        std::fs::write(&path, "{\"label\":\"POSITIVE\",\"score\":0.9}\n\n").unwrap();
        assert_eq!(read_expected(&path, 1).unwrap()[0].label, "POSITIVE");
        let err = read_expected(&path, 2).unwrap_err().to_string();
        assert!(err.contains("1 answers for 2 texts"), "{err}");
        std::fs::write(&path, "not json\n").unwrap();
        let err = format!("{:#}", read_expected(&path, 1).unwrap_err());
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn each_front_is_asked_what_it_can_answer() {
        let names = |f| {
            bad_inputs(f)
                .into_iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
        };
        assert!(names(Front::ApiGateway).contains(&"payload_over_lambda_limit"));
        assert!(!names(Front::ApiGateway).contains(&"not_utf8"));
        assert!(names(Front::Server).contains(&"body_over_limit"));
        assert!(names(Front::Router).contains(&"wrong_content_type"));
        assert_eq!(Front::of("lambda"), Front::ApiGateway);
        assert_eq!(Front::of("k8s"), Front::Server);
    }

    #[test]
    fn the_summary_counts_each_verdict() {
        let o = |v| Outcome {
            backend: "k8s".into(),
            check: "x".into(),
            verdict: v,
            detail: String::new(),
        };
        let outcomes = [
            o(Verdict::Pass),
            o(Verdict::Pass),
            o(Verdict::Fail),
            o(Verdict::Skip),
        ];
        assert_eq!(summary(&outcomes), "2 passed, 1 failed, 1 skipped");
        assert!(!all_passed(&outcomes));
        assert!(all_passed(&outcomes[..2]));
    }
}
