//! `bootstrap`: the Lambda function (custom runtime, `provided.al2023`).
//!
//! Init (everything before the runtime loop) resolves the model — files beside this
//! binary, `MODEL_DIR`, or `MODEL_S3_URI` fetched into /tmp — and loads the classifier
//! once. A failed init is reported to the Runtime API's `/init/error` with a message
//! that says what to fix, then the process exits.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use lambda_runtime::{LambdaEvent, service_fn};
use model_cache::{Classifier, ClassifierOptions, threads};
use sentiment_lambda::delivery::ModelLocation;
use sentiment_lambda::handler::Function;
use sentiment_lambda::runtime_api::report_init_error;
use serde_json::Value;

/// An init failure: the Runtime API `errorType` and the message.
struct InitFailure {
    error_type: &'static str,
    error: anyhow::Error,
}

impl InitFailure {
    fn new(error_type: &'static str, error: impl Into<anyhow::Error>) -> Self {
        Self {
            error_type,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        // Without it there is nobody to take events or an init error: say so instead
        // of loading a model and then panicking inside the runtime client.
        eprintln!(
            "bootstrap is a Lambda function: run it under Lambda or `lambda-emulator` \
             (AWS_LAMBDA_RUNTIME_API is not set)"
        );
        return ExitCode::from(2);
    }
    // Before any thread exists: candle reads RAYON_NUM_THREADS on every matmul, and
    // setting the environment is only sound while this is the only thread.
    let threads = match thread_count() {
        Ok(threads) => threads,
        Err(error) => return fail(InitFailure::new("Runtime.ConfigError", error)),
    };
    // SAFETY: single-threaded here; the tokio runtime and the inference pool start later.
    unsafe { threads::export_thread_count(threads) };
    init_logging();

    let classifier = match init(threads) {
        Ok(classifier) => classifier,
        Err(failure) => return fail(failure),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(InitFailure::new("Runtime.InitError", e)),
    };
    let init_duration = started.elapsed();
    let info = classifier.info();
    tracing::info!(
        init_ms = init_duration.as_secs_f64() * 1e3,
        load_ms = info.load_seconds * 1e3,
        threads = info.threads,
        stored_dtype = %info.stored_dtype,
        parameters = info.parameters,
        "init complete"
    );
    let function = Arc::new(Function::new(classifier, init_duration));
    // One invocation at a time per instance (Lambda's model), so inference runs inline
    // on the runtime's thread: nothing else needs that thread meanwhile, and the
    // classifier's own pool does the parallel work.
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let function = Arc::clone(&function);
        async move {
            Ok::<Value, lambda_runtime::Error>(
                function.handle_and_log(&event.payload, &event.context.request_id),
            )
        }
    });
    match runtime.block_on(lambda_runtime::run(handler)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "runtime loop ended");
            ExitCode::FAILURE
        }
    }
}

/// `MODEL_THREADS` when set, else the vCPUs the function's memory size buys.
fn thread_count() -> anyhow::Result<usize> {
    match std::env::var("MODEL_THREADS") {
        Ok(value) if !value.is_empty() => value
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("MODEL_THREADS={value:?} is not a positive integer")),
        _ => Ok(threads::default_threads()),
    }
}

/// Resolves the model (an S3 fetch runs on its own short-lived runtime) and loads it.
fn init(threads: usize) -> Result<Classifier, InitFailure> {
    let location = ModelLocation::from_env().map_err(|e| InitFailure::new(e.error_type(), e))?;
    tracing::info!(model = %location.describe(), threads, "loading model");
    let checkpoint = location
        .resolve()
        .map_err(|e| InitFailure::new(e.error_type(), e))?;
    let precision = match std::env::var("MODEL_PRECISION") {
        Ok(value) if !value.is_empty() => value.parse().map_err(|e: String| {
            InitFailure::new(
                "Runtime.ConfigError",
                anyhow::anyhow!("MODEL_PRECISION: {e}"),
            )
        })?,
        _ => model_cache::Precision::F32,
    };
    let options = ClassifierOptions {
        threads: Some(threads),
        precision,
        ..ClassifierOptions::default()
    };
    // `{e}` already carries the cause (model-cache errors print their source), so the
    // error is flattened into one message rather than chained.
    Classifier::load(&checkpoint, &options).map_err(|e| {
        InitFailure::new(
            "Runtime.ModelLoadError",
            anyhow::anyhow!(
                "loading the checkpoint in {}: {e}",
                checkpoint.dir().display()
            ),
        )
    })
}

/// Reports an init failure to the Runtime API (so Lambda shows the message instead of a
/// bare exit) and exits non-zero.
fn fail(failure: InitFailure) -> ExitCode {
    let message = format!("{:#}", failure.error);
    eprintln!("init failed ({}): {message}", failure.error_type);
    if let Err(e) = report_init_error(failure.error_type, &message) {
        eprintln!("could not report the init error: {e}");
    }
    ExitCode::FAILURE
}

/// JSON lines on stderr (CloudWatch keeps them as one event each); `RUST_LOG` or
/// `AWS_LAMBDA_LOG_LEVEL` filter, `info` by default.
fn init_logging() {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_lowercase()))
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}
