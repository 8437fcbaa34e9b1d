//! The sentiment HTTP API as data: request and response bodies, the validation rules,
//! the error kinds with their status codes, the content-type rule and the timing
//! headers. Shared by the Kubernetes server, the Lambda function, the Lambda emulator,
//! the router and the benchmark. Serde only: a client, router or emulator that speaks
//! the API never compiles the model stack. Servers map [`ErrorKind`] to their
//! framework's status codes through [`ErrorKind::status`].

#[cfg(feature = "logging")]
pub mod logging;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest accepted text, in bytes of UTF-8. Generous on purpose: texts longer than the
/// model's token limit are accepted and truncated (flagged in the answer); this limit only
/// bounds the tokenizer's work per text.
pub const MAX_TEXT_BYTES: usize = 100_000;
/// Most texts in one `{"inputs": [...]}` request.
pub const MAX_BATCH_INPUTS: usize = 64;

/// Response headers with the server's timings, in milliseconds as a decimal string:
/// time waiting for a batch, tokenization + forward pass, and all time in the server.
pub const QUEUE_TIME_HEADER: &str = "x-queue-time";
pub const INFERENCE_TIME_HEADER: &str = "x-inference-time";
pub const TOTAL_TIME_HEADER: &str = "x-total-time";

/// Whether a `Content-Type` value names JSON: `application/json` or a structured
/// syntax suffix `application/<anything>+json` (RFC 6839), parameters ignored, case
/// insensitive.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.rsplit_once('+').is_some_and(|(name, suffix)| {
                !name.is_empty() && suffix.eq_ignore_ascii_case("json")
            }))
}

/// The content-type rule of `POST /predict`, the same on every server: JSON only, but
/// a request without the header is let through, so `curl --data-binary` users need no
/// header to try the API. A refusal is a 415 body naming the type sent.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), ErrorBody> {
    match content_type {
        Some(value) if !is_json_content_type(value) => Err(ErrorBody::new(
            ErrorKind::UnsupportedMediaType,
            format!("content type {value:?} is not accepted; send application/json"),
        )),
        _ => Ok(()),
    }
}

/// A request body: `{"text": "..."}` or `{"inputs": ["...", ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum PredictRequest {
    Single {
        /// One text, non-blank, at most 100,000 bytes of UTF-8.
        #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100_000))]
        text: String,
    },
    Batch {
        /// 1 to 64 texts, each as for `text`; answered as a list in the same order.
        #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 64))]
        inputs: Vec<String>,
    },
}

impl PredictRequest {
    /// The texts to classify, in request order.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            PredictRequest::Single { text } => vec![text.as_str()],
            PredictRequest::Batch { inputs } => inputs.iter().map(String::as_str).collect(),
        }
    }

    pub fn is_batch(&self) -> bool {
        matches!(self, PredictRequest::Batch { .. })
    }
}

/// One classification result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Prediction {
    /// The arg-max class, e.g. `POSITIVE` or `NEGATIVE`.
    pub label: String,
    /// Softmax probability of `label`, the arg-max class. Written as the f32's
    /// shortest decimal even through `serde_json::Value` (which holds numbers as f64
    /// and would write 0.7918741703033447 for 0.7918742), so both runtimes print the
    /// same digits.
    #[serde(serialize_with = "shortest_f32")]
    pub score: f32,
    /// Present and true when the text was longer than the model's limit and only its
    /// beginning was classified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

fn shortest_f32<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    // An f32's Display is its shortest round-trip decimal; as an f64 that decimal
    // prints back unchanged.
    s.serialize_f64(v.to_string().parse().unwrap_or(f64::from(*v)))
}

/// A response body: one prediction for `{"text"}`, a list in request order for `{"inputs"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum PredictResponse {
    Single(Prediction),
    Batch(Vec<Prediction>),
}

impl PredictResponse {
    /// Shapes `predictions` like the request that asked for them.
    pub fn for_request(request: &PredictRequest, mut predictions: Vec<Prediction>) -> Self {
        if request.is_batch() || predictions.len() != 1 {
            PredictResponse::Batch(predictions)
        } else {
            PredictResponse::Single(predictions.remove(0))
        }
    }
}

/// Every error body: `{"error": kind, "detail": message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorKind,
    pub detail: String,
}

impl ErrorBody {
    pub fn new(error: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            error,
            detail: detail.into(),
        }
    }
}

/// The kinds of failure a client can see, each with one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The body is not JSON (or not UTF-8). 400.
    InvalidJson,
    /// JSON of the wrong shape or values outside the documented limits. 422.
    InvalidInput,
    /// The body is larger than the server accepts. 413.
    PayloadTooLarge,
    /// The request's content type is not `application/json`. 415.
    UnsupportedMediaType,
    /// No such route. 404.
    NotFound,
    /// The route exists but not for this method. 405.
    MethodNotAllowed,
    /// The queue is full; retry after the `Retry-After` seconds. 503.
    Overloaded,
    /// The model is not loaded yet, or the server is shutting down. 503.
    NotReady,
    /// The request waited longer than its deadline. 504.
    Timeout,
    /// Too many concurrent requests (Lambda throttling). 429.
    Throttled,
    /// A bug or a failed inference. 500.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code for this kind.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidJson => 400,
            ErrorKind::InvalidInput => 422,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Overloaded | ErrorKind::NotReady => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Throttled => 429,
            ErrorKind::Internal => 500,
        }
    }
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not valid UTF-8.
    #[error("body is not valid UTF-8: {0}")]
    NotUtf8(String),
    /// The body is not parseable JSON.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The JSON is not an object with a `text` string or an `inputs` array of strings.
    #[error("{0}")]
    WrongShape(String),
    /// A text is empty or only whitespace.
    #[error("{field} is empty or whitespace-only")]
    EmptyText { field: String },
    /// A text is longer than [`MAX_TEXT_BYTES`].
    #[error("{field} is {len} bytes; the limit is {max} bytes")]
    TextTooLong {
        field: String,
        len: usize,
        max: usize,
    },
    /// `inputs` is empty.
    #[error("inputs is an empty list; send at least one text")]
    EmptyBatch,
    /// `inputs` has more than [`MAX_BATCH_INPUTS`] texts.
    #[error("inputs has {len} texts; the limit is {max} per request")]
    BatchTooLarge { len: usize, max: usize },
}

impl RequestError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RequestError::NotUtf8(_) | RequestError::InvalidJson(_) => ErrorKind::InvalidJson,
            _ => ErrorKind::InvalidInput,
        }
    }

    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.kind(), self.to_string())
    }
}

/// Parses and validates a request body. The one definition of what is acceptable.
pub fn parse_request(body: &[u8]) -> Result<PredictRequest, RequestError> {
    let text = std::str::from_utf8(body).map_err(|e| RequestError::NotUtf8(e.to_string()))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let request = request_from_value(value)?;
    validate(&request)?;
    Ok(request)
}

fn request_from_value(value: Value) -> Result<PredictRequest, RequestError> {
    let Value::Object(mut object) = value else {
        return Err(RequestError::WrongShape(format!(
            "expected a JSON object with \"text\" or \"inputs\", got {}",
            json_type(&value)
        )));
    };
    match (object.remove("text"), object.remove("inputs")) {
        (Some(_), Some(_)) => Err(RequestError::WrongShape(
            "send either \"text\" or \"inputs\", not both".into(),
        )),
        (Some(Value::String(text)), None) => Ok(PredictRequest::Single { text }),
        (Some(other), None) => Err(RequestError::WrongShape(format!(
            "\"text\" must be a string, got {}",
            json_type(&other)
        ))),
        (None, Some(Value::Array(items))) => {
            let inputs = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s),
                    other => Err(RequestError::WrongShape(format!(
                        "inputs[{i}] must be a string, got {}",
                        json_type(&other)
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(PredictRequest::Batch { inputs })
        }
        (None, Some(other)) => Err(RequestError::WrongShape(format!(
            "\"inputs\" must be a list of strings, got {}",
            json_type(&other)
        ))),
        (None, None) => Err(RequestError::WrongShape(
            "expected a \"text\" string or an \"inputs\" list of strings".into(),
        )),
    }
}

/// Checks the documented limits on an already-shaped request.
pub fn validate(request: &PredictRequest) -> Result<(), RequestError> {
    match request {
        PredictRequest::Single { text } => validate_text("text", text),
        PredictRequest::Batch { inputs } => {
            if inputs.is_empty() {
                return Err(RequestError::EmptyBatch);
            }
            if inputs.len() > MAX_BATCH_INPUTS {
                return Err(RequestError::BatchTooLarge {
                    len: inputs.len(),
                    max: MAX_BATCH_INPUTS,
                });
            }
            inputs
                .iter()
                .enumerate()
                .try_for_each(|(i, text)| validate_text(&format!("inputs[{i}]"), text))
        }
    }
}

/// Checks one text against the limits; `field` names it in the error (`text`,
/// `inputs[3]`, `line 12`).
pub fn validate_text(field: &str, text: &str) -> Result<(), RequestError> {
    if text.trim().is_empty() {
        return Err(RequestError::EmptyText {
            field: field.into(),
        });
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(RequestError::TextTooLong {
            field: field.into(),
            len: text.len(),
            max: MAX_TEXT_BYTES,
        });
    }
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_application_json_or_a_json_suffix() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            " application/merge-patch+json ",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "text/json",
            "image/svg+xml",
            "text/x+json",
            "application/+json",
            "application/jsonp",
            "json",
            "",
        ] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
        assert!(check_content_type(None).is_ok());
        let refused = check_content_type(Some("text/plain")).unwrap_err();
        assert_eq!(refused.error, ErrorKind::UnsupportedMediaType);
        assert_eq!(refused.error.status(), 415);
        assert!(
            refused.detail.contains("\"text/plain\""),
            "{}",
            refused.detail
        );
    }

    #[test]
    fn single_and_batch_requests_parse() {
        assert_eq!(
            parse_request(br#"{"text": "great movie"}"#).unwrap(),
            PredictRequest::Single {
                text: "great movie".into()
            }
        );
        let batch = parse_request(br#"{"inputs": ["a", "b c"]}"#).unwrap();
        assert_eq!(batch.texts(), vec!["a", "b c"]);
        assert!(batch.is_batch());
    }

    #[test]
    fn each_bad_input_gets_its_own_error_and_kind() {
        let cases: &[(&[u8], ErrorKind, &str)] = &[
            (b"\xff\xfe", ErrorKind::InvalidJson, "UTF-8"),
            (b"{not json", ErrorKind::InvalidJson, "JSON"),
            (b"[1,2]", ErrorKind::InvalidInput, "got a list"),
            (
                br#"{"text": 5}"#,
                ErrorKind::InvalidInput,
                "must be a string",
            ),
            (
                br#"{"text": "  \n\t"}"#,
                ErrorKind::InvalidInput,
                "whitespace",
            ),
            (
                br#"{"inputs": "x"}"#,
                ErrorKind::InvalidInput,
                "list of strings",
            ),
            (
                br#"{"inputs": ["ok", 3]}"#,
                ErrorKind::InvalidInput,
                "inputs[1]",
            ),
            (br#"{"inputs": []}"#, ErrorKind::InvalidInput, "empty list"),
            (
                br#"{"inputs": ["ok", ""]}"#,
                ErrorKind::InvalidInput,
                "inputs[1]",
            ),
            (
                br#"{"text": "a", "inputs": ["b"]}"#,
                ErrorKind::InvalidInput,
                "not both",
            ),
            (br#"{"txt": "a"}"#, ErrorKind::InvalidInput, "expected a"),
        ];
        for (body, kind, needle) in cases {
            let err = parse_request(body).unwrap_err();
            assert_eq!(err.kind(), *kind, "{err}");
            assert!(err.to_string().contains(needle), "{err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn limits_are_enforced_at_the_boundary() {
        let at_limit = "a".repeat(MAX_TEXT_BYTES);
        assert!(validate(&PredictRequest::Single { text: at_limit }).is_ok());
        let over = "a".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            validate(&PredictRequest::Single { text: over }),
            Err(RequestError::TextTooLong { .. })
        ));
        let batch = |n| PredictRequest::Batch {
            inputs: vec!["x".to_string(); n],
        };
        assert!(validate(&batch(MAX_BATCH_INPUTS)).is_ok());
        assert!(matches!(
            validate(&batch(MAX_BATCH_INPUTS + 1)),
            Err(RequestError::BatchTooLarge { .. })
        ));
    }

    #[test]
    fn responses_serialize_like_the_documented_api() {
        let p = Prediction {
            label: "POSITIVE".into(),
            score: 0.5,
            truncated: false,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"label":"POSITIVE","score":0.5}"#
        );
        let t = Prediction {
            truncated: true,
            ..p.clone()
        };
        assert!(
            serde_json::to_string(&t)
                .unwrap()
                .contains(r#""truncated":true"#)
        );
        let single = PredictRequest::Single { text: "x".into() };
        assert!(matches!(
            PredictResponse::for_request(&single, vec![p.clone()]),
            PredictResponse::Single(_)
        ));
        let batch = PredictRequest::Batch {
            inputs: vec!["x".into()],
        };
        assert!(matches!(
            PredictResponse::for_request(&batch, vec![p]),
            PredictResponse::Batch(_)
        ));
        let body = ErrorBody::new(ErrorKind::Overloaded, "queue full");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"overloaded","detail":"queue full"}"#
        );
        assert_eq!(ErrorKind::Overloaded.status(), 503);
        assert_eq!(ErrorKind::InvalidInput.status(), 422);
    }
}
