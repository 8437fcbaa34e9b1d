//! The one tracing setup of the project's binaries: where log lines go (stderr), how
//! they are filtered (`RUST_LOG`, else the binary's default level) and how they look.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line (log shippers, `LOG_JSON=true`).
    Json,
    /// One flat JSON object per line with the event's fields at the top level and no
    /// span lists: CloudWatch keeps each line as one event and Logs Insights reads the
    /// fields directly.
    FlatJson,
}

/// Installs the global subscriber on stderr. `RUST_LOG` wins; otherwise
/// `default_filter` (e.g. `"info"`). Calling it twice keeps the first subscriber.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
        LogFormat::FlatJson => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
