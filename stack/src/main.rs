//! `stack`: the CLI over the engine. `anyhow` lives here, at the edge.

mod cli;
mod targets;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    init_tracing(args.verbose, args.quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

/// Logs to stderr: warnings by default, errors only with `--quiet`, the engine's
/// events and provider statuses with `-v`, everyone's debug logs with `-vv`;
/// `RUST_LOG` overrides.
fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        // The credential chain warns once per provider per request when credentials
        // cannot be loaded; the failed call's error says it once, with a hint.
        (false, 0) => "warn,aws_config=error",
        (false, 1) => "warn,aws_config=error,stack=debug",
        (false, _) => "debug,stack=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
