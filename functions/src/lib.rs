//! DistilBERT sentiment as an AWS Lambda function, plus a local Lambda runtime emulator.
//!
//! - [`event`]: turns an invocation payload (API Gateway HTTP API v2, function URL, or a
//!   direct invocation with the plain JSON body) into a request, and a result back into
//!   the payload the caller expects. Pure: no model, no I/O.
//! - [`handler`]: the function itself: the classifier loaded once at init, one
//!   structured log line per invocation.
//! - [`delivery`]: where the model comes from (files beside `bootstrap`, a directory in
//!   an image, or an S3 URI fetched into `/tmp` during init).
//! - [`runtime_api`]: the one Runtime API call the `lambda_runtime` crate cannot make for
//!   us: reporting a failed init.
//! - [`emulator`]: a local Lambda (Runtime API per instance, cold starts, keep-alive,
//!   throttling, REPORT lines) behind an API Gateway-like HTTP front.

pub mod delivery;
pub mod emulator;
pub mod event;
pub mod handler;
pub mod runtime_api;
