//! Invocation payloads in, response payloads out.
//!
//! `lambda_http` would parse API Gateway and function-URL events, but it rejects a
//! direct invocation whose payload is the plain `{"text": ..}` body, which this function
//! must also accept. So the runtime hands us raw JSON and this module tells the shapes
//! apart: anything with `requestContext.http` is an HTTP event (payload format 2.0 —
//! function URLs use the same format), everything else is a direct invocation.

use base64::Engine;
use sentiment_api::{self as wire, ErrorBody, ErrorKind, PredictRequest};
use serde_json::{Value, json};

/// The route the function serves, as on the Kubernetes server.
pub const PREDICT_PATH: &str = "/predict";

/// Where an invocation came from; decides the response's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// API Gateway HTTP API, payload format 2.0.
    ApiGatewayV2,
    /// A Lambda function URL (same payload format, `lambda-url` domain).
    FunctionUrl,
    /// `aws lambda invoke` / the Invoke API with the request body as the payload.
    Direct,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::ApiGatewayV2 => "apigw_v2",
            Source::FunctionUrl => "function_url",
            Source::Direct => "direct",
        }
    }
}

/// An invocation, checked up to (not including) classification.
#[derive(Debug)]
pub struct Invocation {
    pub source: Source,
    /// The validated request, or the error to answer with.
    pub request: Result<PredictRequest, ErrorBody>,
}

/// Reads an invocation payload: routing, method, content type, base64, then the
/// shared body validation from `model-cache`.
pub fn parse(event: &Value) -> Invocation {
    let Some(http) = event.pointer("/requestContext/http") else {
        // Direct invocation: the payload is the body. Re-serializing keeps one
        // definition of validation (`wire::parse_request` takes bytes).
        let body = serde_json::to_vec(event).unwrap_or_default();
        return Invocation {
            source: Source::Direct,
            request: wire::parse_request(&body).map_err(|e| e.to_body()),
        };
    };
    let domain = event
        .pointer("/requestContext/domainName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let source = if domain.contains(".lambda-url.") {
        Source::FunctionUrl
    } else {
        Source::ApiGatewayV2
    };
    Invocation {
        source,
        request: parse_http(event, http),
    }
}

fn parse_http(event: &Value, http: &Value) -> Result<PredictRequest, ErrorBody> {
    let path = event
        .get("rawPath")
        .or_else(|| http.get("path"))
        .and_then(Value::as_str)
        .unwrap_or("/");
    // API Gateway stages prefix the path (`/prod/predict`); the route is the suffix.
    if !path.ends_with(PREDICT_PATH) {
        return Err(ErrorBody::new(
            ErrorKind::NotFound,
            format!("no route for {path}; POST {PREDICT_PATH}"),
        ));
    }
    let method = http.get("method").and_then(Value::as_str).unwrap_or("");
    if !method.eq_ignore_ascii_case("POST") {
        return Err(ErrorBody::new(
            ErrorKind::MethodNotAllowed,
            format!("{method} {PREDICT_PATH} is not allowed; use POST"),
        ));
    }
    sentiment_api::check_content_type(header(event, "content-type"))?;
    let body = event.get("body").and_then(Value::as_str).unwrap_or("");
    let base64 = event
        .get("isBase64Encoded")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let bytes = if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| {
                ErrorBody::new(
                    ErrorKind::InvalidJson,
                    format!("body is marked base64-encoded but does not decode: {e}"),
                )
            })?
    } else {
        body.as_bytes().to_vec()
    };
    wire::parse_request(&bytes).map_err(|e| e.to_body())
}

/// Header lookup; API Gateway v2 lowercases names, tests and other callers may not.
fn header<'a>(event: &'a Value, name: &str) -> Option<&'a str> {
    event
        .get("headers")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// The payload to return: an HTTP response object for API Gateway and function URLs,
/// the bare JSON body for direct invocations (which have no status code; an error is
/// recognisable by its `error` field, exactly as in the HTTP body).
pub fn respond(source: Source, status: u16, body: &Value) -> Value {
    match source {
        Source::Direct => body.clone(),
        Source::ApiGatewayV2 | Source::FunctionUrl => {
            let mut headers = serde_json::Map::new();
            headers.insert("content-type".into(), "application/json".into());
            if status == ErrorKind::MethodNotAllowed.status() {
                headers.insert("allow".into(), "POST".into());
            }
            json!({
                "statusCode": status,
                "headers": headers,
                "body": body.to_string(),
                "isBase64Encoded": false,
            })
        }
    }
}

/// The status and JSON body for an error.
pub fn error_response(source: Source, error: &ErrorBody) -> (u16, Value) {
    let body = serde_json::to_value(error).unwrap_or(Value::Null);
    let status = error.error.status();
    (status, respond(source, status, &body))
}
