//! `sentiment-router`: parses the flags, builds the router, serves until SIGTERM or
//! Ctrl-C, then drains in-flight requests within the grace period.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sentiment_api::logging::{self, LogFormat};
use sentiment_router::{Args, Router, server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let format = if args.log_json {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    logging::init(format, "info");
    let config = args.config()?;
    tracing::info!(
        lambda = %config.lambda_url,
        k8s = %config.k8s_url,
        default_backend = %config.default_choice,
        "backends"
    );
    let router = Router::new(config)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    server::serve(
        listener,
        router,
        shutdown_signal(),
        Duration::from_millis(args.shutdown_grace_ms),
    )
    .await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
