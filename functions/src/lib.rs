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
//!
//! The local Lambda that runs `bootstrap` in tests and benchmarks is its own crate,
//! `lambda-emulator`, so the stack and the benchmark can use it without the model.

pub mod delivery;
pub mod event;
pub mod handler;
pub mod runtime_api;
