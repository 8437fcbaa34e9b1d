//! Every AWS API request the stack sends, one JSON line each (`--request-log`): what a
//! reviewer reads before a first real deployment, and what [`crate::aws_rules`] checks
//! against AWS's documented rules where moto accepts what AWS refuses.
//!
//! An SDK interceptor records the request as serialized (after the SDK has validated
//! and encoded the input, before signing), once per operation, retries aside.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Strings longer than this (a base64 zip in `CreateFunction`) are logged as their
/// length: `{"omitted_chars": N}`.
const LONGEST_STRING: usize = 1024;

/// One request as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// The SDK's service name (`Lambda`, `EC2`, ...).
    pub service: String,
    /// The operation (`CreateFunction`, ...).
    pub operation: String,
    /// HTTP method.
    pub method: String,
    /// Path and query (REST APIs carry ids here, e.g. the function name).
    pub path: String,
    /// The parameters: a JSON body as sent; a query-protocol form (EC2, IAM, STS) as an
    /// object of its keys (`Action`, `TagSpecification.1.Tag.1.Key`, ...); any other
    /// body (an S3 object) as `{"body_bytes": N}`.
    pub params: Value,
}

impl LoggedRequest {
    /// A parameter by name, as a string (form values are strings; JSON members are
    /// looked up as they are).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }
}

/// The interceptor: appends each request to a file shared by every client.
#[derive(Debug, Clone)]
pub struct RequestLog {
    file: Arc<Mutex<File>>,
}

impl RequestLog {
    /// Appends to `path`, creating it.
    pub fn append_to(path: &Path) -> io::Result<RequestLog> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(RequestLog {
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Reads a log back.
    pub fn read(path: &Path) -> io::Result<Vec<LoggedRequest>> {
        let file = io::BufReader::new(File::open(path)?);
        file.lines()
            .filter(|l| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
            .map(|l| serde_json::from_str(&l?).map_err(io::Error::other))
            .collect()
    }

    fn write(&self, r: &LoggedRequest) -> io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(&line)
    }
}

impl Intercept for RequestLog {
    fn name(&self) -> &'static str {
        "RequestLog"
    }

    fn read_after_serialization(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let req = context.request();
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_default();
        let content_type = req.headers().get("content-type").unwrap_or_default();
        let logged = LoggedRequest {
            service,
            operation,
            method: req.method().to_string(),
            path: path_of(req.uri()).to_string(),
            params: params(content_type, req.body().bytes()),
        };
        self.write(&logged)
            .map_err(|e| format!("cannot write the request log: {e}").into())
    }
}

/// The path and query of a URI that may or may not carry its endpoint yet.
fn path_of(uri: &str) -> &str {
    match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => uri,
    }
}

/// A body as parameters (see [`LoggedRequest::params`]).
fn params(content_type: &str, body: Option<&[u8]>) -> Value {
    let body = body.unwrap_or_default();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let form: Map<String, Value> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        return shorten(Value::Object(form));
    }
    if body.is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if content_type.contains("json") => shorten(v),
        _ => serde_json::json!({ "body_bytes": body.len() }),
    }
}

fn shorten(v: Value) -> Value {
    match v {
        Value::String(s) if s.len() > LONGEST_STRING => {
            serde_json::json!({ "omitted_chars": s.len() })
        }
        Value::Array(a) => Value::Array(a.into_iter().map(shorten).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, shorten(v))).collect()),
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_protocol_forms_become_objects() {
        let body = b"Action=CreateSubnet&VpcId=vpc-1&TagSpecification.1.Tag.1.Key=kubernetes.io%2Frole%2Felb";
        let p = params(
            "application/x-www-form-urlencoded; charset=utf-8",
            Some(body),
        );
        assert_eq!(p["Action"], "CreateSubnet");
        assert_eq!(p["TagSpecification.1.Tag.1.Key"], "kubernetes.io/role/elb");
    }

    #[test]
    fn json_bodies_are_kept_with_long_strings_shortened() {
        let zip = "A".repeat(4000);
        let body =
            serde_json::to_vec(&json!({"Runtime": "provided.al2023", "Code": {"ZipFile": zip}}));
        let p = params("application/json", Some(&body.unwrap()));
        assert_eq!(p["Runtime"], "provided.al2023");
        assert_eq!(p["Code"]["ZipFile"], json!({"omitted_chars": 4000}));
    }

    #[test]
    fn other_bodies_are_logged_by_size() {
        let p = params("application/octet-stream", Some(b"PK\x03\x04 zip bytes"));
        assert_eq!(p, json!({"body_bytes": 14}));
    }

    #[test]
    fn paths_drop_the_endpoint() {
        assert_eq!(
            path_of("https://lambda.us-east-1.amazonaws.com/2015-03-31/functions"),
            "/2015-03-31/functions"
        );
        assert_eq!(
            path_of("/2015-03-31/functions?x=1"),
            "/2015-03-31/functions?x=1"
        );
        assert_eq!(path_of("http://127.0.0.1:5000"), "/");
    }

    #[test]
    fn a_log_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let log = RequestLog::append_to(&path).unwrap();
        let r = LoggedRequest {
            service: "EKS".into(),
            operation: "CreateCluster".into(),
            method: "POST".into(),
            path: "/clusters".into(),
            params: json!({"name": "c", "version": "1.35"}),
        };
        log.write(&r).unwrap();
        log.write(&r).unwrap();
        assert_eq!(RequestLog::read(&path).unwrap(), vec![r.clone(), r]);
    }
}
