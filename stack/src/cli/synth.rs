//! `stack synth`: the declared desired state as JSON, the Kubernetes objects as YAML
//! (`--k8s`), or every AWS request a first `up` would send (`--requests`).

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use super::{Cli, load_with};
use crate::targets::{self, Addons, KubeChoice};
use stack::engine::apply::{ApplyOptions, apply};
use stack::engine::events::Events;
use stack::engine::plan::plan;
use stack::engine::state::{LocalStore, State, StateStore};
use stack::engine::{Resource, Stack};
use stack::providers::aws::request_log::{LoggedRequest, RequestLog};

/// What `synth` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Declaration,
    K8s,
    Requests,
}

pub async fn run(cli: &Cli, output: Output, events: &Events) -> Result<i32> {
    // The Kubernetes objects need no Lambda artifact.
    let opts = stack::app::BuildOptions {
        artifacts: output != Output::K8s,
    };
    let ctx = load_with(cli, opts, events)?;
    match output {
        Output::K8s => {
            let state = ctx.store.load()?;
            print!("{}", k8s_yaml(&ctx.stack, &state)?);
        }
        Output::Declaration => println!("{}", serde_json::to_string_pretty(&ctx.stack)?),
        Output::Requests => return requests(cli, &ctx).await,
    }
    Ok(0)
}

/// The Kubernetes objects of the declaration, references resolved from state.
fn k8s_yaml(stack: &Stack, state: &State) -> Result<String> {
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

/// The account id moto answers with; AWS's is the caller's own.
const MOTO_ACCOUNT: &str = "123456789012";

/// `synth --requests`: a first `up` rehearsed against a throwaway moto with the
/// request log on, then the log printed with every value AWS would assign (ids, ARNs,
/// the account) as a `<resource.output>` placeholder. Nothing of the user's state or
/// endpoints is touched. Exit 1 when a request breaks one of AWS's rules or needs an
/// action the deployer policy lacks.
async fn requests(cli: &Cli, ctx: &super::Ctx) -> Result<i32> {
    let moto = tokio::task::spawn_blocking(test_support::Moto::try_start)
        .await?
        .map_err(|e| anyhow!("the rehearsal needs a throwaway moto: {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("stack-rehearsal-")
        .tempdir()
        .context("creating the rehearsal's scratch directory")?;
    let log = dir.path().join("requests.jsonl");
    let mut settings = cli.settings.clone();
    settings.request_log = Some(log.clone());
    settings.registry = None;
    settings.kube = Some(KubeChoice::Local);
    settings.eks_addons = Some(Addons::State);
    eprintln!(
        "Rehearsing `stack up` against a throwaway moto ({}): nothing is sent to AWS.",
        moto.url
    );
    let provs = targets::providers(
        targets::Target::Local,
        &moto.url,
        dir.path(),
        &settings,
        &ctx.cfg,
        false,
    )
    .await?;
    stack::app::network::check_zones(&provs.clients.ec2, &ctx.cfg)
        .await
        .map_err(anyhow::Error::msg)?;
    let store = LocalStore::new(dir.path(), &ctx.cfg.stack, "rehearsal");
    let empty = State::default();
    let p = plan(&ctx.stack, &empty, &provs.reg, &Events::none()).await?;
    // One at a time, so the requests come in an order a reviewer can follow.
    let opts = ApplyOptions {
        parallelism: 1,
        fault_after: None,
        events: Events::none(),
    };
    let (state, _) = apply(&ctx.stack, &p, &store, empty, &provs.reg, &opts)
        .await
        .context("the rehearsal's `up` against moto failed")?;
    let sent = RequestLog::read(&log).with_context(|| format!("reading {}", log.display()))?;
    let k8s: Vec<Value> = state
        .resources
        .values()
        .filter(|r| r.kind.starts_with("k8s:"))
        .map(|r| r.props.clone())
        .collect();
    let broken = stack::aws_rules::check(&stack::aws_rules::Evidence {
        requests: &sent,
        k8s: &k8s,
        today: stack::app::eks_versions::today(),
    });
    let denied = stack::aws_rules::denied_by_deployer_policy(&sent);

    let placeholders = placeholders(&ctx.stack, &state);
    let sent: Vec<LoggedRequest> = sent
        .into_iter()
        .map(|r| with_placeholders(r, &placeholders))
        .collect::<Result<_>>()?;
    if ctx.json {
        for r in &sent {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print!("{}", render(&sent, &ctx.stack, &state));
    }
    for v in &broken {
        eprintln!("AWS would refuse or break on: {v}");
    }
    if !denied.is_empty() {
        eprintln!(
            "stack/aws/deployer-policy.json lacks what these requests need: {}",
            denied.join(", ")
        );
    }
    eprintln!(
        "{} requests; AWS's rules: {} of {} hold; deployer policy: {}.",
        sent.len(),
        stack::aws_rules::RULES.len() - rules_broken(&broken),
        stack::aws_rules::RULES.len(),
        if denied.is_empty() {
            "allows every one"
        } else {
            "incomplete"
        }
    );
    Ok(if broken.is_empty() && denied.is_empty() {
        0
    } else {
        1
    })
}

fn rules_broken(broken: &[stack::aws_rules::Violation]) -> usize {
    let mut ids: Vec<&str> = broken.iter().map(|v| v.rule).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// Each value moto assigned (an output that the declaration does not spell out) and
/// its placeholder, shortest first: an ARN built from an id and the account reads
/// `arn:aws:execute-api:us-east-1:<account-id>:<http-api.id>/*/*/predict`, which is
/// what a reviewer checks.
fn placeholders(stack: &Stack, state: &State) -> Vec<(String, String)> {
    let declared = serde_json::to_string(stack).unwrap_or_default();
    let mut found: Vec<(String, String)> = state
        .resources
        .iter()
        .flat_map(|(name, r)| {
            r.outputs.iter().filter_map(move |(key, value)| {
                let value = value.as_str()?;
                (value.len() >= 6).then(|| (value.to_string(), format!("<{name}.{key}>")))
            })
        })
        .filter(|(value, _)| !declared.contains(value.as_str()))
        .collect();
    found.push((MOTO_ACCOUNT.to_string(), "<account-id>".to_string()));
    found.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.cmp(b)));
    found.dedup_by(|a, b| a.0 == b.0);
    found
}

fn with_placeholders(r: LoggedRequest, placeholders: &[(String, String)]) -> Result<LoggedRequest> {
    let mut text = serde_json::to_string(&r)?;
    for (value, placeholder) in placeholders {
        text = text.replace(value.as_str(), placeholder);
    }
    Ok(serde_json::from_str(&text)?)
}

/// The requests for a reader: a numbered heading each, the parameters beneath, then
/// what `up` also does that is not an AWS SDK request.
fn render(sent: &[LoggedRequest], stack: &Stack, state: &State) -> String {
    let mut out = String::from(
        "# Every AWS API request a first `stack up` sends, in order (rehearsed against moto, \
         one operation at a time). <resource.output> stands for a value AWS assigns; \
         <account-id> for your account.\n",
    );
    for (i, r) in sent.iter().enumerate() {
        let params = serde_json::to_string_pretty(&r.params).unwrap_or_default();
        out.push_str(&format!(
            "\n{}. {} {}  ({} {})\n",
            i + 1,
            r.service,
            r.operation,
            r.method,
            r.path
        ));
        for line in params.lines() {
            out.push_str(&format!("   {line}\n"));
        }
    }
    let not_sdk: Vec<String> = stack
        .resources
        .iter()
        .filter(|d| !sent_by_sdk(&d.kind) && state.resources.contains_key(&d.name))
        .map(|d| format!("{} ({})", d.name, d.kind))
        .collect();
    out.push_str(&format!(
        "\n# Also done by `up`, not as AWS SDK requests above: {}. On AWS the image is \
         pushed to ECR with a token from ecr:GetAuthorizationToken, each EKS add-on is \
         an eks:CreateAddon, the Kubernetes objects (`stack synth --k8s`) go to the \
         cluster's API, and every wait polls its Describe* call.\n",
        not_sdk.join(", ")
    ));
    out
}

/// Whether a kind's provider talks to AWS through the SDK in the rehearsal (the image
/// is pushed over the registry API, add-ons stand in state, Kubernetes objects go to
/// the cluster's API).
fn sent_by_sdk(kind: &str) -> bool {
    !(kind.starts_with("k8s:")
        || kind == stack::artifacts::image::KIND
        || kind == stack::providers::aws::eks::Addon::KIND)
}
