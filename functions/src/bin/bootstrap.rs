//! `bootstrap`: the Lambda function (custom runtime, `provided.al2023`).
//!
//! Init (everything before the runtime loop) resolves the model — files beside this
//! binary, `MODEL_DIR`, or `MODEL_S3_URI` fetched into /tmp — and loads the classifier
//! once. A failed init is reported to the Runtime API's `/init/error` with a message
//! that says what to fix, then the process exits.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use lambda_runtime::{LambdaEvent, service_fn};
use model_cache::args::ModelArgs;
use model_cache::{Classifier, ClassifierOptions, LoadError, threads};
use sentiment_api::logging::LogFormat;
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
    let settings = match settings() {
        Ok(settings) => settings,
        Err(failure) => return fail(failure),
    };
    let threads = settings.thread_count();
    // SAFETY: single-threaded here; the tokio runtime and the inference pool start later.
    unsafe { threads::export_thread_count(threads) };
    init_logging();

    let classifier = match init(&settings, threads) {
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

/// The model settings shared with the server and the CLI, read from the function's
/// environment (`MODEL_THREADS`, `MODEL_PRECISION`, …) by the same clap definitions.
#[derive(clap::Parser)]
struct Settings {
    #[command(flatten)]
    model: ModelArgs,
}

/// Reads [`Settings`]; a bad value is named by its environment variable, since that is
/// what a function's configuration sets. Call it while the process has one thread.
fn settings() -> Result<ModelArgs, InitFailure> {
    use clap::error::{ContextKind, ContextValue};
    use clap::{CommandFactory, Parser};
    // A function's configuration often carries a variable set to "" for "unset"
    // (templated environments): read those as absent, not as a value to parse.
    for arg in Settings::command().get_arguments() {
        if let Some(name) = arg.get_env()
            && std::env::var_os(name).is_some_and(|v| v.is_empty())
        {
            // SAFETY: called from main before any other thread exists.
            unsafe { std::env::remove_var(name) };
        }
    }
    Settings::try_parse_from(["bootstrap"])
        .map(|s| s.model)
        .map_err(|e| {
            let context = |kind| match e.get(kind) {
                Some(ContextValue::String(s)) => s.clone(),
                _ => String::new(),
            };
            let (flag, value) = (
                context(ContextKind::InvalidArg),
                context(ContextKind::InvalidValue),
            );
            let command = Settings::command();
            let env = command
                .get_arguments()
                .find(|a| {
                    a.get_long()
                        .is_some_and(|l| flag.starts_with(&format!("--{l}")))
                })
                .and_then(|a| a.get_env())
                .map(|v| v.to_string_lossy().into_owned());
            let why = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.kind().to_string());
            let message = match env {
                Some(env) => format!("{env}={value:?} is not valid: {why}"),
                None => e.to_string(),
            };
            InitFailure::new("Runtime.ConfigError", anyhow::anyhow!(message))
        })
}

/// Resolves the model (an S3 fetch runs on its own short-lived runtime), loads it and
/// proves it with one forward pass.
fn init(settings: &ModelArgs, threads: usize) -> Result<Classifier, InitFailure> {
    let location = ModelLocation::from_env().map_err(|e| InitFailure::new(e.error_type(), e))?;
    tracing::info!(model = %location.describe(), threads, "loading model");
    let options = ClassifierOptions {
        threads: Some(threads),
        ..settings.classifier_options()
    };
    match model_cache::load(&location.source(), &options) {
        Ok(loaded) => Ok(loaded.classifier),
        Err(LoadError::Resolve { error, .. }) => {
            let error = location.delivery_error(*error);
            Err(InitFailure::new(error.error_type(), error))
        }
        // `{e}` already carries the cause (model-cache errors print their source), so
        // the error is flattened into one message rather than chained.
        Err(e) => Err(InitFailure::new(
            "Runtime.ModelLoadError",
            anyhow::anyhow!("{e}"),
        )),
    }
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

/// Flat JSON lines on stderr (CloudWatch keeps them as one event each); `RUST_LOG`,
/// else `AWS_LAMBDA_LOG_LEVEL`, else `info`.
fn init_logging() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .map(|l| l.to_lowercase())
        .unwrap_or_else(|_| "info".into());
    sentiment_api::logging::init(LogFormat::FlatJson, &level);
}
