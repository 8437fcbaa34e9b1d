//! Reporting a failed init to the Lambda Runtime API (`POST /runtime/init/error`).
//!
//! `lambda_runtime` only talks to the Runtime API once its loop starts; an init that
//! fails before that (no model, corrupt weights, bad configuration) must say so itself,
//! or Lambda only sees a process that exited and retries it in a crash loop. A blocking
//! one-shot HTTP/1.1 request is enough and needs no async runtime.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

/// Why reporting failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `AWS_LAMBDA_RUNTIME_API` is not set: not running under Lambda or an emulator.
    #[error("AWS_LAMBDA_RUNTIME_API is not set; not running under a Lambda runtime")]
    NoRuntimeApi,
    /// The Runtime API could not be reached or answered badly.
    #[error("posting to the Runtime API at {api}: {detail}")]
    Post { api: String, detail: String },
}

/// Posts `message` as the init error of type `error_type` (for example
/// `Runtime.ModelNotFound`) to the Runtime API named by `AWS_LAMBDA_RUNTIME_API`.
pub fn report_init_error(error_type: &str, message: &str) -> Result<(), ReportError> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| ReportError::NoRuntimeApi)?;
    post_init_error(&api, error_type, message)
}

/// Like [`report_init_error`] with an explicit `host:port`.
pub fn post_init_error(api: &str, error_type: &str, message: &str) -> Result<(), ReportError> {
    let fail = |detail: String| ReportError::Post {
        api: api.to_string(),
        detail,
    };
    let body = json!({ "errorMessage": message, "errorType": error_type }).to_string();
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Runtime-Function-Error-Type: {error_type}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(api).map_err(|e| fail(e.to_string()))?;
    // Lambda answers at once; a hung endpoint must not hang init for its full timeout.
    let timeout = Some(Duration::from_secs(5));
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| fail(e.to_string()))?;
    let mut response = String::new();
    // A read error after the status line arrived is irrelevant (`Connection: close`).
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| fail(format!("no HTTP status in {response:?}")))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(fail(format!("status {status}")))
    }
}
