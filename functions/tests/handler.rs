//! The handler against API Gateway v2, function-URL and direct-invocation payloads,
//! including base64 bodies and each kind of bad input. No runtime, no processes.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use model_cache::{Checkpoint, Classifier, ClassifierOptions};
use sentiment_lambda::event::Source;
use sentiment_lambda::handler::{Function, Outcome};
use serde_json::{Value, json};

fn function() -> &'static Function {
    static FUNCTION: OnceLock<Function> = OnceLock::new();
    FUNCTION.get_or_init(|| {
        let checkpoint = Checkpoint::open(common::tiny_model()).expect("checkpoint");
        let options = ClassifierOptions {
            threads: Some(1),
            ..ClassifierOptions::default()
        };
        Function::new(
            Classifier::load(&checkpoint, &options).expect("load"),
            Duration::ZERO,
        )
    })
}

fn event(name: &str) -> Value {
    let path = format!("{}/tests/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect("event JSON")
}

/// An API Gateway v2 event with another body / method / path / content type.
fn apigw(body: Option<&str>, base64: bool) -> Value {
    let mut event = event("apigw-v2.json");
    match body {
        Some(body) => event["body"] = Value::String(body.into()),
        None => {
            event.as_object_mut().unwrap().remove("body");
        }
    }
    event["isBase64Encoded"] = Value::Bool(base64);
    event
}

/// Status and parsed body of an HTTP-shaped payload.
fn http_answer(payload: &Value) -> (u16, Value) {
    let status = payload["statusCode"].as_u64().expect("statusCode") as u16;
    assert_eq!(payload["headers"]["content-type"], "application/json");
    assert_eq!(payload["isBase64Encoded"], false);
    let body =
        serde_json::from_str(payload["body"].as_str().expect("body string")).expect("JSON body");
    (status, body)
}

/// Handles the HTTP-shaped event file `name`, which must be read as coming from `source`
/// and answered 200; the outcome and its parsed body.
fn http_event_answered_200(name: &str, source: Source) -> (Outcome, Value) {
    let outcome = function().handle(&event(name));
    assert_eq!(outcome.source, source, "{name}");
    let (status, body) = http_answer(&outcome.payload);
    assert_eq!(status, 200, "{name}: {body}");
    (outcome, body)
}

fn assert_prediction(p: &Value) {
    let label = p["label"].as_str().expect("label");
    assert!(label == "NEGATIVE" || label == "POSITIVE", "{p}");
    let score = p["score"].as_f64().expect("score");
    assert!((0.5..=1.0).contains(&score), "{p}");
}

#[test]
fn apigw_v2_event_gets_an_http_response_with_one_prediction() {
    let (outcome, body) = http_event_answered_200("apigw-v2.json", Source::ApiGatewayV2);
    // Scores print as the server prints them: an f32's shortest form, not an f64's.
    let text = outcome.payload["body"].as_str().unwrap();
    let score = text
        .split("\"score\":")
        .nth(1)
        .unwrap()
        .trim_end_matches(['}', ']']);
    assert_eq!(score, body["score"].as_f64().unwrap().to_string());
    assert_eq!(score.parse::<f32>().unwrap().to_string(), score, "{text}");
    assert_prediction(&body);
}

#[test]
fn function_url_event_with_base64_batch_body_gets_a_list() {
    let (_, body) = http_event_answered_200("function-url.json", Source::FunctionUrl);
    let list = body.as_array().expect("a list for inputs");
    assert_eq!(list.len(), 2);
    list.iter().for_each(assert_prediction);
}

#[test]
fn direct_invocation_returns_the_plain_body() {
    let outcome = function().handle(&event("direct.json"));
    assert_eq!(outcome.source, Source::Direct);
    assert_eq!(outcome.status, 200);
    assert_prediction(&outcome.payload);
    assert!(outcome.payload.get("statusCode").is_none());
}

#[test]
fn direct_invocation_bad_input_returns_the_error_body() {
    let outcome = function().handle(&json!({"inputs": []}));
    assert_eq!(outcome.status, 422);
    assert_eq!(outcome.payload["error"], "invalid_input");
    assert!(
        outcome.payload["detail"]
            .as_str()
            .unwrap()
            .contains("empty list")
    );
    let outcome = function().handle(&json!("just a string"));
    assert_eq!(outcome.payload["error"], "invalid_input");
}

#[test]
fn same_answer_for_plain_and_base64_bodies() {
    let text = r#"{"text": "the same words"}"#;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    let plain = function().handle(&apigw(Some(text), false));
    let b64 = function().handle(&apigw(Some(&encoded), true));
    assert_eq!(http_answer(&plain.payload), http_answer(&b64.payload));
}

#[test]
fn each_bad_input_gets_the_servers_status_and_error_body() {
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let not_utf8 = b64(b"\xff\xfe{}");
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "not JSON",
            apigw(Some("{not json"), false),
            400,
            "invalid_json",
            "JSON",
        ),
        ("no body", apigw(None, false), 400, "invalid_json", "JSON"),
        (
            "bad base64",
            apigw(Some("%%%"), true),
            400,
            "invalid_json",
            "base64",
        ),
        (
            "base64 of non-UTF-8",
            apigw(Some(&not_utf8), true),
            400,
            "invalid_json",
            "UTF-8",
        ),
        (
            "a list",
            apigw(Some("[1]"), false),
            422,
            "invalid_input",
            "got a list",
        ),
        (
            "text not a string",
            apigw(Some(r#"{"text": 5}"#), false),
            422,
            "invalid_input",
            "must be a string",
        ),
        (
            "blank text",
            apigw(Some(r#"{"text": "  "}"#), false),
            422,
            "invalid_input",
            "whitespace",
        ),
        (
            "empty batch",
            apigw(Some(r#"{"inputs": []}"#), false),
            422,
            "invalid_input",
            "empty list",
        ),
        (
            "both fields",
            apigw(Some(r#"{"text": "a", "inputs": ["b"]}"#), false),
            422,
            "invalid_input",
            "not both",
        ),
        (
            "too long",
            apigw(
                Some(&format!(r#"{{"text": "{}"}}"#, "a".repeat(100_001))),
                false,
            ),
            422,
            "invalid_input",
            "limit",
        ),
        (
            "too many",
            apigw(
                Some(&format!(
                    r#"{{"inputs": [{}]}}"#,
                    vec!["\"x\""; 65].join(",")
                )),
                false,
            ),
            422,
            "invalid_input",
            "limit",
        ),
    ];
    for (name, event, status, kind, needle) in cases {
        let outcome = function().handle(&event);
        let (got_status, body) = http_answer(&outcome.payload);
        assert_eq!(got_status, status, "{name}: {body}");
        assert_eq!(body["error"], kind, "{name}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "{name}: {detail:?} lacks {needle:?}"
        );
    }
}

#[test]
fn routing_method_and_content_type_are_checked_like_the_server() {
    let mut wrong_path = event("apigw-v2.json");
    wrong_path["rawPath"] = "/classify".into();
    let (status, body) = http_answer(&function().handle(&wrong_path).payload);
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let mut staged = event("apigw-v2.json");
    staged["rawPath"] = "/prod/predict".into();
    assert_eq!(http_answer(&function().handle(&staged).payload).0, 200);

    let mut get = event("function-url.json");
    get["requestContext"]["http"]["method"] = "GET".into();
    let payload = function().handle(&get).payload;
    assert_eq!(payload["headers"]["allow"], "POST");
    let (status, body) = http_answer(&payload);
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );

    let mut form = event("apigw-v2.json");
    form["headers"]["content-type"] = "application/x-www-form-urlencoded".into();
    let (status, body) = http_answer(&function().handle(&form).payload);
    assert_eq!(
        (status, body["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    let mut charset = event("apigw-v2.json");
    charset["headers"]["content-type"] = "application/json; charset=utf-8".into();
    assert_eq!(http_answer(&function().handle(&charset).payload).0, 200);
}
