//! Subcommands: diff, up, down, refresh, outputs, synth.

pub mod render;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use stack::artifacts::image::{self, ImageProvider, Push};
use stack::config::Config;
use stack::engine::apply::{ApplyOptions, apply, exports};
use stack::engine::events::Events;
use stack::engine::plan::{Plan, Short, diff_props, plan};
use stack::engine::state::{LocalStore, StateStore};
use stack::engine::{Stack, UNKNOWN};
use stack::providers::Registry;
use stack::providers::aws::{self, AwsTarget, Clients};
use stack::providers::k8s::{self, Kube, KubeSource, ObjectProvider, dataplane, fake};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// A local AWS-compatible endpoint (moto) with dummy credentials.
    Local,
    /// AWS with the default credential chain.
    Aws,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::Aws => "aws",
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what `up` would do. Exit 0: no changes, 2: changes, 1: error.
    Diff,
    /// Plan, confirm, apply, print outputs.
    Up {
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Concurrent resource operations.
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
    },
    /// Delete everything the state owns, dependents first.
    Down {
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Concurrent resource operations.
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
    },
    /// Read everything, report drift, record the observed values in state.
    Refresh,
    /// Print the stack outputs (all, or one by name).
    Outputs {
        /// One output's name.
        name: Option<String>,
    },
    /// Print the declared desired state as JSON (no API calls).
    Synth {
        /// Print only the Kubernetes objects, as multi-document YAML for
        /// `kubectl apply -f -` (references resolved from state where known).
        #[arg(long)]
        k8s: bool,
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
}

struct Ctx {
    stack: Stack,
    store: LocalStore,
    cfg: Config,
    /// `--json`.
    json: bool,
}

fn load(cli: &Cli, events: &Events) -> Result<Ctx> {
    load_with(cli, stack::app::BuildOptions::default(), events)
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
    if let Ok(b) = std::env::var("STACK_SERVER_BIN") {
        cfg.k8s.server_binary = b;
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

/// The providers, and what must stay alive while they are used (the local
/// Kubernetes API server).
struct Providers {
    reg: Registry,
    kube: Arc<Kube>,
    _local_api: Option<fake::Server>,
    /// The local data plane, when the API is the in-memory one and the server
    /// binary exists.
    dataplane: Option<dataplane::DataPlane>,
}

fn secs_env(name: &str, default: u64) -> std::time::Duration {
    std::time::Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

async fn registry(cli: &Cli, cfg: &Config) -> Result<Providers> {
    let target = match cli.target {
        Target::Local => AwsTarget::Local {
            endpoint: cli.endpoint_url.clone(),
        },
        Target::Aws => AwsTarget::Aws,
    };
    let clients = Arc::new(Clients::new(&target, &cfg.region).await);
    let mut reg = Registry::default();
    aws::register(&mut reg, &clients);
    let push = match (cli.target, std::env::var("STACK_REGISTRY")) {
        (Target::Aws, _) => Push::Ecr(clients.clone()),
        (Target::Local, Ok(url)) => Push::Registry(url),
        (Target::Local, Err(_)) => Push::None,
    };
    reg.register(image::KIND, Arc::new(ImageProvider(push)));
    // EKS add-ons: the real API on AWS; on the local target only when asked for
    // (moto has no add-on API, and there is no EKS cluster to run one in).
    let addons = std::env::var("STACK_EKS_ADDONS").unwrap_or_else(|_| match cli.target {
        Target::Aws => "api".into(),
        Target::Local => "state".into(),
    });
    match addons.as_str() {
        "api" => {}
        "state" => reg.register(
            aws::eks::ADDON_KIND,
            Arc::new(aws::eks::AddonProvider::StateOnly),
        ),
        other => bail!("STACK_EKS_ADDONS={other}: expected api or state"),
    }

    // Where the Kubernetes API is: STACK_KUBE forces one; otherwise EKS on AWS, the
    // current kubeconfig context when KUBECONFIG is set, else the local in-memory API.
    let choice = std::env::var("STACK_KUBE").unwrap_or_else(|_| {
        match (cli.target, std::env::var_os("KUBECONFIG").is_some()) {
            (Target::Aws, _) => "eks".into(),
            (Target::Local, true) => "kubeconfig".into(),
            (Target::Local, false) => "local".into(),
        }
    });
    let rollout = Some(secs_env("STACK_ROLLOUT_TIMEOUT_SECS", 600));
    let (source, rollout, server) = match choice.as_str() {
        "kubeconfig" => (KubeSource::Kubeconfig, rollout, None),
        "eks" => (
            KubeSource::Eks {
                eks: clients.eks.clone(),
                sdk: Box::new(clients.sdk.clone()),
                cluster: cfg.prefix.clone(),
                token_file: cli.state_dir.join(format!("{}-eks-token", cfg.stack)),
            },
            rollout,
            None,
        ),
        "local" => {
            std::fs::create_dir_all(&cli.state_dir)
                .with_context(|| format!("creating {}", cli.state_dir.display()))?;
            let snap = cli
                .state_dir
                .join(format!("{}.{}.k8s.json", cfg.stack, cli.target.name()));
            let api = fake::FakeApi::new(Some(snap)).await?;
            let server = api
                .serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                .await?;
            // No controller runs pods on the in-memory API: no rollout to wait for.
            (KubeSource::Ready(server.client()?), None, Some(server))
        }
        other => bail!("STACK_KUBE={other}: expected local, kubeconfig or eks"),
    };
    let kube = Kube::new(source);
    let mut p = ObjectProvider::new(kube.clone(), rollout);
    p.delete_timeout = secs_env("STACK_DELETE_TIMEOUT_SECS", 900);
    k8s::register(&mut reg, Arc::new(p));
    let bin = std::path::Path::new(&cfg.k8s.server_binary);
    let dataplane = (server.is_some() && bin.is_file()).then(|| dataplane::DataPlane {
        dir: cli.state_dir.join("dataplane"),
        binary: bin.to_path_buf(),
        model_dir: std::env::var("STACK_MODEL_DIR").unwrap_or_else(|_| {
            cfg.k8s
                .model_env
                .get("MODEL_DIR")
                .cloned()
                .unwrap_or_else(|| "models".into())
        }),
        front_port: std::env::var("STACK_FRONT_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
        front_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("stack")),
        ready_timeout: secs_env("STACK_READY_TIMEOUT_SECS", 120),
    });
    Ok(Providers {
        reg,
        kube,
        _local_api: server,
        dataplane,
    })
}

/// Runs the local data plane against what the API now says (no-op elsewhere).
async fn run_dataplane(p: &Providers, stack: &str) -> Result<()> {
    let Some(dp) = &p.dataplane else {
        return Ok(());
    };
    let client = p.kube.client().await?;
    if let Some(addr) = dp.reconcile(&client, stack).await? {
        println!("Local data plane: http://{addr} (front over the server processes)");
    }
    Ok(())
}

/// Deletes labelled objects of this stack that are no longer declared (e.g. left by
/// an interrupted run or a renamed object).
async fn prune(p: &Providers, stack: &Stack) -> Result<()> {
    let keep: Vec<String> = stack
        .resources
        .iter()
        .filter(|d| d.kind.starts_with("k8s:"))
        .map(|d| k8s::prune_id(&d.props))
        .collect();
    let client = p.kube.client().await?;
    for id in k8s::prune(&client, &stack.name, &keep).await? {
        println!("Pruned {id} (labelled as this stack's, no longer declared)");
    }
    Ok(())
}

/// The Kubernetes objects of the declaration, references resolved from state.
fn k8s_yaml(stack: &Stack, state: &stack::engine::state::State) -> Result<String> {
    let outputs = |r: &str, k: &str| {
        state
            .resources
            .get(r)
            .and_then(|s| s.outputs.get(k).cloned())
    };
    let mut docs = Vec::new();
    for d in stack
        .resources
        .iter()
        .filter(|d| d.kind.starts_with("k8s:"))
    {
        let (v, _) = stack::engine::resolve(&d.props, &outputs);
        docs.push(serde_saphyr::to_string(&v).context("YAML")?);
    }
    Ok(docs
        .iter()
        .map(|d| format!("---\n{}", d.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
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

fn apply_opts(parallelism: usize, events: &Events) -> Result<ApplyOptions> {
    let fault_after = match std::env::var("STACK_FAULT_AFTER") {
        Ok(v) => Some(
            v.parse()
                .with_context(|| format!("STACK_FAULT_AFTER={v} is not a number"))?,
        ),
        Err(_) => None,
    };
    if parallelism == 0 {
        bail!("--parallelism must be at least 1");
    }
    Ok(ApplyOptions {
        parallelism,
        fault_after,
        events: events.clone(),
    })
}

/// With `--json` the last line of `up`/`down`: `{"event":"complete", report, outputs}`.
fn print_outputs(
    stack: &Stack,
    state: &stack::engine::state::State,
    json: bool,
    report: Option<&stack::engine::apply::ApplyReport>,
) -> Result<()> {
    let outs = exports(stack, state);
    if json {
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
        println!(
            "  {k} = {}",
            v.as_str().map_or_else(|| v.to_string(), str::to_string)
        );
    }
    Ok(())
}

/// The plan's events are the plan's rendering in JSON mode; otherwise the plan is
/// printed whole.
fn plan_events(json: bool, events: &Events) -> Events {
    if json { events.clone() } else { Events::none() }
}

/// Runs one command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    let reporter = render::Reporter::start(render::Style::pick(cli.json), cli.quiet);
    let events = reporter.events();
    let json = cli.json;
    match &cli.command {
        Command::Front { listen, backends } => {
            dataplane::serve_front(*listen, backends.clone()).await?;
            Ok(0)
        }
        Command::Synth { k8s } => {
            // The Kubernetes objects need no Lambda artifact.
            let opts = stack::app::BuildOptions {
                lambda_artifacts: !*k8s,
            };
            let ctx = load_with(&cli, opts, &events)?;
            if *k8s {
                let state = ctx.store.load()?;
                print!("{}", k8s_yaml(&ctx.stack, &state)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&ctx.stack)?);
            }
            Ok(0)
        }
        Command::Outputs { name } => {
            let ctx = load(&cli, &events)?;
            let state = ctx.store.load()?;
            let outs = exports(&ctx.stack, &state);
            match name {
                Some(n) => {
                    let v = outs
                        .get(n)
                        .with_context(|| format!("no output named `{n}`"))?;
                    if v == UNKNOWN {
                        bail!("output `{n}` is not known yet: run `stack up` first");
                    }
                    println!(
                        "{}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_string)
                    );
                }
                None if json => println!("{}", serde_json::to_string_pretty(&outs)?),
                None => {
                    for (k, v) in outs {
                        println!(
                            "{k} = {}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_string)
                        );
                    }
                }
            }
            Ok(0)
        }
        Command::Diff => {
            let ctx = load(&cli, &events)?;
            let _lock = ctx.store.lock("diff")?;
            let provs = registry(&cli, &ctx.cfg).await?;
            let reg = &provs.reg;
            let state = ctx.store.load()?;
            // The plan is the output here, not progress.
            let p = plan(&ctx.stack, &state, reg, &Events::none()).await?;
            if json {
                let mut v = serde_json::to_value(&p)?;
                v["summary"] = serde_json::to_value(p.summary())?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", p.render());
            }
            Ok(if p.has_changes() { 2 } else { 0 })
        }
        Command::Up { yes, parallelism } => {
            let ctx = load(&cli, &events)?;
            let opts = apply_opts(*parallelism, &events)?;
            let _lock = ctx.store.lock("up")?;
            let provs = registry(&cli, &ctx.cfg).await?;
            let reg = &provs.reg;
            let state = ctx.store.load()?;
            let p = plan(&ctx.stack, &state, reg, &plan_events(json, &events)).await?;
            if !json {
                print!("{}", p.render());
            }
            execute(&ctx, &p, state, reg, &opts, *yes, "Apply these changes?").await?;
            prune(&provs, &ctx.stack).await?;
            run_dataplane(&provs, &ctx.stack.name).await?;
            Ok(0)
        }
        Command::Down { yes, parallelism } => {
            let ctx = load(&cli, &events)?;
            let opts = apply_opts(*parallelism, &events)?;
            let _lock = ctx.store.lock("down")?;
            let provs = registry(&cli, &ctx.cfg).await?;
            let reg = &provs.reg;
            let state = ctx.store.load()?;
            // An empty declaration: everything in state is planned for deletion.
            let empty = Stack::new(&ctx.stack.name);
            let p = plan(&empty, &state, reg, &plan_events(json, &events)).await?;
            if !json {
                print!("{}", p.render());
            }
            let ctx = Ctx {
                stack: empty,
                ..ctx
            };
            execute(
                &ctx,
                &p,
                state,
                reg,
                &opts,
                *yes,
                "Delete all these resources?",
            )
            .await?;
            run_dataplane(&provs, &ctx.stack.name).await?;
            Ok(0)
        }
        Command::Refresh => {
            let ctx = load(&cli, &events)?;
            let _lock = ctx.store.lock("refresh")?;
            let provs = registry(&cli, &ctx.cfg).await?;
            let reg = &provs.reg;
            let mut state = ctx.store.load()?;
            let p = plan(&ctx.stack, &state, reg, &Events::none()).await?;
            refresh(&ctx, &p, &mut state, json)?;
            Ok(0)
        }
    }
}

async fn execute(
    ctx: &Ctx,
    p: &Plan,
    state: stack::engine::state::State,
    reg: &Registry,
    opts: &ApplyOptions,
    yes: bool,
    question: &str,
) -> Result<()> {
    let json = ctx.json;
    if !p.has_changes() && p.adopted.is_empty() {
        print_outputs(&ctx.stack, &state, json, None)?;
        return Ok(());
    }
    if p.has_changes() && !yes && !confirm(question)? {
        bail!("cancelled; nothing was changed");
    }
    let t = std::time::Instant::now();
    let (state, report) = apply(&ctx.stack, p, &ctx.store, state, reg, opts).await?;
    if json {
        return print_outputs(&ctx.stack, &state, json, Some(&report));
    }
    println!(
        "Apply complete in {:.1}s: {} created, {} updated, {} replaced, {} deleted. State: {}",
        t.elapsed().as_secs_f64(),
        report.created,
        report.updated,
        report.replaced,
        report.deleted,
        ctx.store.describe()
    );
    print_outputs(&ctx.stack, &state, json, None)
}

fn refresh(ctx: &Ctx, p: &Plan, state: &mut stack::engine::state::State, json: bool) -> Result<()> {
    let mut drift: Vec<Value> = Vec::new();
    for st in &p.steps {
        let Some(owned) = state.resources.get_mut(&st.name) else {
            continue;
        };
        match &st.observed {
            None => {
                drift.push(json!({ "resource": st.name, "kind": st.kind, "deleted": true }));
                state.resources.remove(&st.name);
            }
            Some(obs) => {
                let changes = diff_props(obs, &owned.props, &[]);
                if !changes.is_empty() {
                    drift.push(json!({ "resource": st.name, "kind": st.kind, "changes": changes }));
                }
                owned.props = obs.clone();
                if let Some(o) = p.outputs.get(&st.name) {
                    owned.outputs = o.clone();
                }
            }
        }
    }
    ctx.store.save(state)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "drift": drift }))?
        );
        return Ok(());
    }
    if drift.is_empty() {
        println!(
            "No drift: {} resources match the state.",
            state.resources.len()
        );
        return Ok(());
    }
    for d in &drift {
        let name = d["resource"].as_str().unwrap_or_default();
        let kind = d["kind"].as_str().unwrap_or_default();
        if d.get("deleted").is_some() {
            println!("  ! {kind} `{name}`: deleted outside the stack");
            continue;
        }
        println!("  ! {kind} `{name}`: changed outside the stack");
        for c in d["changes"].as_array().into_iter().flatten() {
            let old = c
                .get("old")
                .filter(|v| !v.is_null())
                .map_or("(none)".into(), |v| Short(v).to_string());
            let new = c
                .get("new")
                .filter(|v| !v.is_null())
                .map_or("(none)".into(), |v| Short(v).to_string());
            println!(
                "      {}: {old} -> {new}",
                c["field"].as_str().unwrap_or_default()
            );
        }
    }
    println!(
        "Drift: {} resource(s) changed outside the stack; state now records what exists. `stack up` restores the declaration.",
        drift.len()
    );
    Ok(())
}
