//! The CLI: global flags (every setting a flag with an environment fallback, shown
//! in `--help`), a thin dispatcher, and one module per subcommand.

mod diff;
mod down;
mod import;
mod outputs;
mod refresh;
pub mod render;
mod status;
mod synth;
mod up;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::targets::{self, Providers, Settings, Target};
use stack::config::Config;
use stack::engine::Stack;
use stack::engine::apply::{ApplyOptions, ApplyReport, apply, exports};
use stack::engine::events::Events;
use stack::engine::plan::{Plan, plan};
use stack::engine::state::{LocalStore, LockGuard, State, StateStore};

/// Declarative infrastructure for the sentiment services: plan, apply, destroy.
#[derive(Debug, Parser)]
#[command(name = "stack", version)]
pub struct Cli {
    /// Stack configuration file (JSON). Defaults to ./stack.json when present.
    #[arg(long, global = true, env = "STACK_CONFIG")]
    config: Option<PathBuf>,
    /// Where the APIs are: a local AWS endpoint, or AWS itself.
    #[arg(long, global = true, value_enum, default_value_t = Target::Local, env = "STACK_TARGET")]
    target: Target,
    /// Endpoint of the local target.
    #[arg(
        long,
        global = true,
        env = "AWS_ENDPOINT_URL",
        default_value = "http://127.0.0.1:5000"
    )]
    endpoint_url: String,
    /// Region (overrides the config file).
    #[arg(long, global = true)]
    region: Option<String>,
    /// Directory of state and lock files.
    #[arg(long, global = true, env = "STACK_STATE_DIR", default_value = ".stack")]
    state_dir: PathBuf,
    /// More detail: -v logs every engine event and provider status, -vv also the SDKs'
    /// and kube's debug logs (RUST_LOG, when set, overrides both).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors: no per-resource progress.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output: the plan (`diff`), drift (`refresh`) or outputs as
    /// JSON; `up` and `down` write their events as JSON lines on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what `up` would do. Exit 0: no changes, 2: changes, 1: error.
    Diff,
    /// Plan, confirm, apply, print outputs.
    Up(ApplyArgs),
    /// Delete everything the state owns, dependents first.
    Down(ApplyArgs),
    /// Read everything, report drift, record the observed values in state. Exit 0: no
    /// drift, 2: drift found (and recorded), 1: error.
    Refresh,
    /// Take over an existing resource that is not this stack's (which `up` refuses
    /// to adopt): read it by id and record it in state as the declared RESOURCE.
    Import {
        /// The declared resource's logical name (`lambda-role`, `vpc`, ...).
        resource: String,
        /// The existing resource's id (a name, an ARN, or an AWS-assigned id such as
        /// `vpc-0abc`, as the kind uses).
        id: String,
    },
    /// Remove the state lock that a killed or stuck run left (`--force`, after
    /// checking that the run naming it is really gone).
    Unlock {
        /// Remove it even if its holder may still be running.
        #[arg(long)]
        force: bool,
    },
    /// What the deployed model server is doing now: the Deployment's replicas, the
    /// HPA's utilization and scaling, the pods. Exit 3 when nothing is deployed.
    Status {
        /// Print a line each time the replicas or the HPA change (Ctrl-C stops).
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// Print the stack outputs (all, or one by name).
    Outputs {
        /// One output's name.
        name: Option<String>,
    },
    /// Print the declared desired state as JSON (no API calls), or what deploying it
    /// sends.
    Synth {
        /// Print only the Kubernetes objects, as multi-document YAML for
        /// `kubectl apply -f -` (references resolved from state where known).
        #[arg(long, conflicts_with = "requests")]
        k8s: bool,
        /// Print every AWS API request a first `up` sends (with `--json`, as JSON
        /// lines), rehearsed against a throwaway moto; ids, ARNs and the account
        /// AWS would assign are `<resource.output>` placeholders. Nothing reaches AWS.
        /// Also checks each request against AWS's documented rules and the deployer
        /// IAM policy: exit 1 when one fails.
        #[arg(long)]
        requests: bool,
    },
    /// The local data plane's front: a TCP proxy over the running server processes
    /// (started by `up` on the local Kubernetes API; not for direct use).
    #[command(hide = true)]
    Front {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// File listing the backends, one `host:port` a line.
        #[arg(long)]
        backends: PathBuf,
    },
    /// The local control plane: the Kubernetes API, the kubelet and the HPA controller
    /// (started by `up` on the local Kubernetes API; not for direct use).
    #[command(hide = true)]
    ControlPlane {
        /// What to run (written by `up`).
        #[arg(long)]
        spec: PathBuf,
    },
    /// A local API Gateway front: the deployed Lambda zip behind an HTTP API (started
    /// by `up` on the local target; not for direct use).
    #[command(hide = true)]
    ApigwFront {
        /// What to serve (written by `up`).
        #[arg(long)]
        spec: PathBuf,
    },
}

/// The flags of `up` and `down`.
#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Concurrent resource operations.
    #[arg(long, default_value_t = 8)]
    parallelism: usize,
}

/// Runs one command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    // JSON lines on stdout only where stdout is not already one JSON document.
    let lines = cli.json && matches!(cli.command, Command::Up(_) | Command::Down(_));
    let reporter = render::Reporter::start(render::Style::pick(lines), cli.quiet);
    let events = reporter.events();
    match &cli.command {
        Command::Front { listen, backends } => {
            stack::providers::k8s::dataplane::serve_front(*listen, backends.clone()).await?;
            Ok(0)
        }
        Command::ControlPlane { spec } => {
            stack::local::control_plane::serve(spec).await?;
            Ok(0)
        }
        Command::ApigwFront { spec } => {
            stack::local::apigw::serve(spec).await?;
            Ok(0)
        }
        Command::Synth { k8s, requests } => {
            let output = match (k8s, requests) {
                (true, _) => synth::Output::K8s,
                (_, true) => synth::Output::Requests,
                _ => synth::Output::Declaration,
            };
            synth::run(&cli, output, &events).await
        }
        Command::Outputs { name } => outputs::run(&cli, name.as_deref(), &events),
        Command::Diff => diff::run(&cli, &events).await,
        Command::Up(a) => up::run(&cli, a, &events).await,
        Command::Down(a) => down::run(&cli, a, &events).await,
        Command::Refresh => refresh::run(&cli, &events).await,
        Command::Import { resource, id } => import::run(&cli, resource, id, &events).await,
        Command::Unlock { force } => unlock(&cli, *force, &events),
        Command::Status { watch } => status::run(&cli, *watch, &events).await,
    }
}

/// What every command works on: the declaration, the state store, the config.
struct Ctx {
    stack: Stack,
    store: LocalStore,
    cfg: Config,
    /// `--json`.
    json: bool,
}

/// `stack unlock`: the holder is named; without `--force` only a lock whose process is
/// known to be gone (same host, no such pid) is removed.
fn unlock(cli: &Cli, force: bool, events: &Events) -> Result<i32> {
    use stack::engine::state::StateStore;
    let ctx = load(cli, events)?;
    match ctx.store.holder()? {
        None => {
            println!("No lock on {}.", ctx.store.describe());
            Ok(0)
        }
        Some((holder, gone)) if !gone && !force => {
            eprintln!(
                "The state {} is locked by {holder}, which may still be running (another \
                 host, or a live process). Check that it is gone, then: stack unlock --force",
                ctx.store.describe()
            );
            Ok(1)
        }
        Some(_) => {
            let removed = ctx.store.unlock()?.unwrap_or_default();
            println!("Removed the lock of {removed} on {}.", ctx.store.describe());
            Ok(0)
        }
    }
}

/// The declaration for a command that deploys nothing (`outputs`, `status`,
/// `refresh`, `import`, `unlock`): the artifacts `up` needs may be absent.
fn load(cli: &Cli, events: &Events) -> Result<Ctx> {
    load_with(cli, stack::app::BuildOptions { artifacts: false }, events)
}

fn load_with(cli: &Cli, opts: stack::app::BuildOptions, events: &Events) -> Result<Ctx> {
    let path = cli.config.clone().or_else(|| {
        let p = PathBuf::from("stack.json");
        p.exists().then_some(p)
    });
    let mut cfg = Config::load(path.as_deref())?;
    if let Some(r) = &cli.region {
        cfg.region = r.clone();
    }
    if let Some(b) = &cli.settings.server_bin {
        cfg.k8s.server_binary = b.clone();
    }
    if let Some(d) = &cli.settings.model_dir {
        cfg.k8s.model_dir = Some(d.clone());
    }
    let stack = stack::app::build_with(&cfg, opts);
    // Everything that can be checked without an API call is checked here.
    stack.validate()?;
    let store =
        LocalStore::new(&cli.state_dir, &cfg.stack, cli.target.name()).with_events(events.clone());
    Ok(Ctx {
        stack,
        store,
        cfg,
        json: cli.json,
    })
}

/// The providers of `cli`'s target; `start`: the local control plane is started if
/// it is not running (`up`, `down`).
async fn providers(cli: &Cli, cfg: &Config, start: bool) -> Result<Providers> {
    targets::providers(
        cli.target,
        &cli.endpoint_url,
        &cli.state_dir,
        &cli.settings,
        cfg,
        start,
    )
    .await
}

/// What AWS checks only once something has been made, checked before the plan: the
/// subnets' zones (their names map to different zone ids in each account).
async fn preflight(cli: &Cli, cfg: &Config, provs: &Providers) -> Result<()> {
    if cli.target == Target::Aws {
        stack::app::network::check_zones(&provs.clients.ec2, cfg)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

fn confirm(what: &str) -> Result<bool> {
    eprint!("{what} Only 'yes' will be accepted: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading confirmation")?;
    Ok(line.trim() == "yes")
}

fn apply_opts(cli: &Cli, a: &ApplyArgs, events: &Events) -> Result<ApplyOptions> {
    if a.parallelism == 0 {
        bail!("--parallelism must be at least 1");
    }
    Ok(ApplyOptions {
        parallelism: a.parallelism,
        fault_after: cli.settings.fault_after,
        events: events.clone(),
    })
}

/// The plan's events are the plan's rendering in JSON mode; otherwise the plan is
/// printed whole.
fn plan_events(json: bool, events: &Events) -> Events {
    if json { events.clone() } else { Events::none() }
}

/// One output value as printed (strings bare).
fn show(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// The outputs after `up`/`down`; with `--json` the last line:
/// `{"event":"complete", report, outputs}`.
fn print_outputs(
    ctx: &Ctx,
    state: &State,
    report: Option<&ApplyReport>,
    local: &targets::LocalEndpoints,
) -> Result<()> {
    let outs = local.rewrite(exports(&ctx.stack, state));
    if ctx.json {
        let mut v = json!({ "event": "complete", "outputs": outs });
        if let Some(r) = report {
            v["report"] = serde_json::to_value(r)?;
        }
        println!("{v}");
        return Ok(());
    }
    if outs.is_empty() {
        return Ok(());
    }
    println!("\nOutputs:");
    for (k, v) in outs {
        println!("  {k} = {}", show(&v));
    }
    Ok(())
}

/// `up` (the declaration) or `down` (an empty one): plan under the lock, show the
/// plan, confirm, apply. Returns the lock, still held for what the command does next.
async fn plan_and_apply(cli: &Cli, a: &ApplyArgs, events: &Events, down: bool) -> Result<Applied> {
    // `down` deletes what the state holds: the artifacts an `up` needs may be gone.
    let build = stack::app::BuildOptions { artifacts: !down };
    let ctx = load_with(cli, build, events)?;
    let opts = apply_opts(cli, a, events)?;
    let lock = ctx.store.lock(if down { "down" } else { "up" })?;
    let provs = providers(cli, &ctx.cfg, true).await?;
    if !down {
        preflight(cli, &ctx.cfg, &provs).await?;
    }
    let state = ctx.store.load()?;
    let (ctx, question) = if down {
        // An empty declaration: everything in state is planned for deletion.
        let stack = Stack::new(&ctx.stack.name);
        (Ctx { stack, ..ctx }, "Delete all these resources?")
    } else {
        (ctx, "Apply these changes?")
    };
    let p = plan(
        &ctx.stack,
        &state,
        &provs.reg,
        &plan_events(ctx.json, events),
    )
    .await?;
    if !ctx.json {
        print!("{}", p.render());
    }
    let (state, report) = execute(&ctx, &p, state, &provs, &opts, (a.yes, question)).await?;
    Ok(Applied {
        ctx,
        provs,
        state,
        report,
        _lock: lock,
    })
}

impl Applied {
    /// Brings what the local target runs in line with the state (fronts, data plane;
    /// nothing elsewhere) and prints the outputs as they answer.
    async fn run_local_and_print(&self) -> Result<()> {
        let local = self.provs.run_local(&self.state).await?;
        print_outputs(&self.ctx, &self.state, self.report.as_ref(), &local)
    }
}

/// What `up` and `down` go on with after applying (the lock still held).
struct Applied {
    ctx: Ctx,
    provs: Providers,
    state: State,
    report: Option<ApplyReport>,
    _lock: Box<dyn LockGuard>,
}

/// Confirms (unless `yes`) and applies `p`, then prints what was done. Returns the
/// state after, and the report when anything was applied.
async fn execute(
    ctx: &Ctx,
    p: &Plan,
    state: State,
    provs: &Providers,
    opts: &ApplyOptions,
    (yes, question): (bool, &str),
) -> Result<(State, Option<ApplyReport>)> {
    if !p.has_changes() && p.adopted.is_empty() {
        return Ok((state, None));
    }
    if p.has_changes() && !yes && !confirm(question)? {
        bail!("cancelled; nothing was changed");
    }
    let t = std::time::Instant::now();
    let (state, report) = apply(&ctx.stack, p, &ctx.store, state, &provs.reg, opts).await?;
    if !ctx.json {
        let stood_in = match report.stood_in {
            0 => String::new(),
            n => format!(", {n} provided by the target"),
        };
        println!(
            "Apply complete in {:.1}s: {} created, {} updated, {} replaced, {} deleted{stood_in}. State: {}",
            t.elapsed().as_secs_f64(),
            report.created,
            report.updated,
            report.replaced,
            report.deleted,
            ctx.store.describe()
        );
    }
    Ok((state, Some(report)))
}
