//! Kubernetes provider over kube-rs: Namespace, Deployment, Service, HPA and PDB.
//!
//! Every object is applied with server-side apply (field manager `stack`, forced so
//! the stack's declaration wins), diffed with a server-side dry-run apply (so fields
//! the API server defaults never show as changes), deleted with foreground
//! propagation, and — for Deployments — followed until the rollout completes.
//! Objects carry `app.kubernetes.io/managed-by: stack` and
//! `app.kubernetes.io/part-of: <stack>`, so [`prune`] can find ones no longer declared.
//!
//! Where the API comes from is a [`KubeSource`]: a kubeconfig context, EKS (endpoint
//! and CA from DescribeCluster, token from [`eks_token`]), or the in-memory API of
//! [`fake`] served on loopback.

pub mod dataplane;
mod deployment;
pub mod eks_token;
pub mod fake;

pub use deployment::{crash_looping, rollout_complete, wait_rollout};

use async_trait::async_trait;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

use super::Registry;
use crate::engine::Resource;
use crate::error::ProviderError;
use crate::providers::Observed;

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "stack";
/// Label marking objects this tool manages.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label naming the stack an object belongs to.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";

/// Errors of the Kubernetes side that are not a single API call's.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// No usable cluster configuration.
    #[error("kubernetes client: {0}")]
    Client(String),
    /// The local in-memory API failed.
    #[error("local kubernetes API: {0}")]
    Local(String),
    /// An API call failed.
    #[error("{op}: {source}")]
    Api {
        /// What was being done.
        op: String,
        /// The kube-rs error.
        source: Box<kube::Error>,
    },
    /// The EKS token could not be made.
    #[error("eks token: {0}")]
    Token(String),
    /// The EKS cluster does not exist (deleted, or not made yet): nothing is in it.
    #[error("EKS cluster {0} does not exist")]
    ClusterGone(String),
}

impl From<K8sError> for ProviderError {
    fn from(e: K8sError) -> Self {
        if let K8sError::ClusterGone(cluster) = &e {
            // Not found, as the AWS providers' errors say it: a read finds nothing.
            return ProviderError::Api {
                op: "eks:DescribeCluster".into(),
                code: "ResourceNotFoundException".into(),
                message: format!("the EKS cluster does not exist: {cluster}"),
                hint: None,
            };
        }
        if let K8sError::Api { op, source } = &e
            && let kube::Error::Api(s) = source.as_ref()
        {
            return ProviderError::Api {
                op: op.clone(),
                code: s.reason.clone(),
                message: s.message.clone(),
                hint: (s.code == 409).then_some(
                    "another field manager owns these fields; the stack applies with force, so this is a conflict outside server-side apply",
                ),
            };
        }
        ProviderError::Api {
            op: "kubernetes".into(),
            code: "Unavailable".into(),
            message: e.to_string(),
            hint: Some(
                "check KUBECONFIG / the cluster endpoint, or use the local default (no KUBECONFIG, --target local)",
            ),
        }
    }
}

fn api_err(op: impl Into<String>) -> impl FnOnce(kube::Error) -> ProviderError {
    let op = op.into();
    move |source| {
        K8sError::Api {
            op,
            source: Box::new(source),
        }
        .into()
    }
}

/// Selects the process-wide rustls crypto provider (the dependency tree enables both
/// ring and aws-lc-rs, so rustls cannot pick one itself). Idempotent.
pub fn ensure_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A kube client for a plain `http://` (loopback) or `https://` URL without auth.
pub fn http_client(url: &str) -> Result<kube::Client, K8sError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| K8sError::Client(format!("{url}: {e}")))?;
    let mut cfg = kube::Config::new(uri);
    cfg.default_namespace = "default".into();
    ensure_crypto();
    kube::Client::try_from(cfg).map_err(|e| K8sError::Client(e.to_string()))
}

/// How the kube client is obtained (lazily: the EKS cluster may not exist yet when a
/// plan is made).
pub enum KubeSource {
    /// A client built already (tests, the loopback API).
    Ready(kube::Client),
    /// `KUBECONFIG` / the current context.
    Kubeconfig,
    /// EKS: endpoint and CA from DescribeCluster, a token refreshed in the background.
    Eks {
        /// EKS SDK client.
        eks: aws_sdk_eks::Client,
        /// Credentials and region for the token.
        sdk: Box<aws_config::SdkConfig>,
        /// Cluster name.
        cluster: String,
        /// Where the token is written (kube-rs re-reads a token file as it expires).
        token_file: PathBuf,
    },
}

/// A [`KubeSource`] resolved once per process.
pub struct Kube {
    source: KubeSource,
    client: OnceCell<kube::Client>,
}

impl Kube {
    /// Wraps a source.
    pub fn new(source: KubeSource) -> Arc<Kube> {
        Arc::new(Kube {
            source,
            client: OnceCell::new(),
        })
    }

    /// The client, built on first use.
    pub async fn client(&self) -> Result<kube::Client, K8sError> {
        self.client
            .get_or_try_init(|| async {
                match &self.source {
                    KubeSource::Ready(c) => Ok(c.clone()),
                    KubeSource::Kubeconfig => {
                        ensure_crypto();
                        kube::Client::try_default()
                            .await
                            .map_err(|e| K8sError::Client(e.to_string()))
                    }
                    KubeSource::Eks {
                        eks,
                        sdk,
                        cluster,
                        token_file,
                    } => eks_token::client(eks, sdk, cluster, token_file).await,
                }
            })
            .await
            .cloned()
    }
}

/// Maps apiVersion/kind to the API resource (no discovery round trip: the provider
/// only manages these five kinds).
pub fn api_resource(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let (plural, namespaced) = match kind {
        "Namespace" => ("namespaces", false),
        "Deployment" => ("deployments", true),
        "Service" => ("services", true),
        "HorizontalPodAutoscaler" => ("horizontalpodautoscalers", true),
        "PodDisruptionBudget" => ("poddisruptionbudgets", true),
        _ => return None,
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

macro_rules! k8s_kind {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $api_version:literal, $k:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Value);
        impl Resource for $name {
            const KIND: &'static str = $kind;
            const TAGGABLE: bool = false;
            fn validate(&self) -> Vec<String> {
                validate_manifest(&self.0, $api_version, $k)
            }
        }
    };
}

k8s_kind!(
    /// `v1 Namespace`.
    Namespace, "k8s:core/v1:Namespace", "v1", "Namespace"
);
k8s_kind!(
    /// `apps/v1 Deployment`.
    Deployment, "k8s:apps/v1:Deployment", "apps/v1", "Deployment"
);
k8s_kind!(
    /// `v1 Service`.
    Service, "k8s:core/v1:Service", "v1", "Service"
);
k8s_kind!(
    /// `autoscaling/v2 HorizontalPodAutoscaler`.
    HorizontalPodAutoscaler, "k8s:autoscaling/v2:HorizontalPodAutoscaler", "autoscaling/v2", "HorizontalPodAutoscaler"
);
k8s_kind!(
    /// `policy/v1 PodDisruptionBudget`.
    PodDisruptionBudget, "k8s:policy/v1:PodDisruptionBudget", "policy/v1", "PodDisruptionBudget"
);

/// Every kind this module provides, in the order objects are applied.
pub const KINDS: [&str; 5] = [
    Namespace::KIND,
    Deployment::KIND,
    Service::KIND,
    HorizontalPodAutoscaler::KIND,
    PodDisruptionBudget::KIND,
];

fn validate_manifest(v: &Value, api_version: &str, kind: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v["apiVersion"] != api_version {
        errs.push(format!("apiVersion must be {api_version}"));
    }
    if v["kind"] != kind {
        errs.push(format!("kind must be {kind}"));
    }
    let name = v["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errs.push(format!("metadata.name `{name}` must be a DNS label"));
    }
    if v["metadata"]["labels"][LABEL_MANAGED_BY] != FIELD_MANAGER {
        errs.push(format!(
            "metadata.labels must carry {LABEL_MANAGED_BY}: stack"
        ));
    }
    errs
}

/// The provider of all five kinds; the manifest says which API it goes to.
pub struct ObjectProvider {
    kube: Arc<Kube>,
    /// How long to wait for a Deployment rollout; `None`: do not wait (no controller
    /// runs the pods, e.g. the in-memory API without the local data plane).
    pub rollout_timeout: Option<Duration>,
    /// How long to wait for a deletion (LoadBalancer Services keep a finalizer until
    /// their cloud load balancer is gone).
    pub delete_timeout: Duration,
    /// How long to wait for a LoadBalancer Service's address; `None`: do not wait (no
    /// cloud controller provisions one, e.g. the local control plane).
    pub load_balancer_timeout: Option<Duration>,
}

impl ObjectProvider {
    /// A provider over `kube`.
    pub fn new(kube: Arc<Kube>, rollout_timeout: Option<Duration>) -> ObjectProvider {
        ObjectProvider {
            kube,
            rollout_timeout,
            delete_timeout: Duration::from_secs(900),
            load_balancer_timeout: None,
        }
    }
}

/// The target of one manifest.
struct Target {
    api: Api<DynamicObject>,
    name: String,
    what: String,
    kind: String,
}

async fn target(kube: &Kube, m: &Value) -> Result<Target, ProviderError> {
    let av = m["apiVersion"].as_str().unwrap_or_default();
    let kind = m["kind"].as_str().unwrap_or_default();
    let (ar, namespaced) = api_resource(av, kind)
        .ok_or_else(|| ProviderError::Props(format!("unsupported kind {av}/{kind}")))?;
    let name = m["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let client = kube.client().await?;
    let (api, what) = if namespaced {
        let ns = m["metadata"]["namespace"].as_str().unwrap_or("default");
        (
            Api::namespaced_with(client, ns, &ar),
            format!("{kind} {ns}/{name}"),
        )
    } else {
        (Api::all_with(client, &ar), format!("{kind} {name}"))
    };
    Ok(Target {
        api,
        name,
        what,
        kind: kind.to_string(),
    })
}

/// Removes what the API server owns (metadata bookkeeping, status) so two objects
/// compare by what was declared or defaulted.
pub fn normalize(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "resourceVersion",
            "generation",
            "managedFields",
            "creationTimestamp",
            "uid",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

/// The live object seen through the shape of the declaration: only declared keys.
pub fn project(live: &Value, desired: &Value) -> Value {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => {
            let mut out = Map::new();
            for (k, dv) in d {
                if let Some(lv) = l.get(k) {
                    out.insert(k.clone(), project(lv, dv));
                }
            }
            Value::Object(out)
        }
        (l, _) => l.clone(),
    }
}

fn outputs(live: &Value) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("name".into(), live["metadata"]["name"].clone());
    if let Some(ns) = live["metadata"]["namespace"].as_str() {
        o.insert("namespace".into(), ns.into());
    }
    if let Some(uid) = live["metadata"]["uid"].as_str() {
        o.insert("uid".into(), uid.into());
    }
    if let Some(why) = failed_rollout(live) {
        o.insert(super::FAILED_OUTPUT.into(), why.into());
    }
    if let Some(h) = load_balancer_address(live) {
        o.insert("hostname".into(), h.into());
        let port = live["spec"]["ports"][0]["port"].as_i64().unwrap_or(80);
        let url = if port == 80 {
            format!("http://{h}/")
        } else {
            format!("http://{h}:{port}/")
        };
        o.insert("url".into(), url.into());
    }
    o
}

/// Why a Deployment's controller gave up on its current spec: its `Progressing`
/// condition is False (`ProgressDeadlineExceeded`: pods crash-looping or never ready
/// within `progressDeadlineSeconds`; `ReplicaSetCreateError`) for the generation it
/// has observed. Such a Deployment reads as failed, so the plan replaces it and says
/// why, instead of "No changes". (The local kubelet's own `ErrImagePull` and
/// `Unschedulable` reasons are warnings about this machine, not failures.)
fn failed_rollout(live: &Value) -> Option<String> {
    if live["kind"] != "Deployment"
        || live["status"]["observedGeneration"] != live["metadata"]["generation"]
    {
        return None;
    }
    let conditions = live["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| {
        c["type"] == "Progressing"
            && c["status"] == "False"
            && matches!(
                c["reason"].as_str(),
                Some("ProgressDeadlineExceeded" | "ReplicaSetCreateError")
            )
    })?;
    Some(format!(
        "rollout failed ({}): {}",
        c["reason"].as_str().unwrap_or_default(),
        c["message"].as_str().unwrap_or_default()
    ))
}

/// The address a cloud controller gave a LoadBalancer Service (an ELB's DNS name on
/// AWS, an IP elsewhere).
fn load_balancer_address(live: &Value) -> Option<&str> {
    let ing = &live["status"]["loadBalancer"]["ingress"][0];
    ing["hostname"].as_str().or(ing["ip"].as_str())
}

/// Waits until the cloud controller has provisioned a LoadBalancer Service's load
/// balancer (its address appears in the status): the apply returns right away, while
/// an ELB takes a minute or more.
async fn wait_load_balancer(
    api: &Api<DynamicObject>,
    name: &str,
    timeout: Duration,
) -> Result<Value, ProviderError> {
    let start = std::time::Instant::now();
    loop {
        let live = to_json(
            &api.get(name)
                .await
                .map_err(api_err(format!("get Service {name}")))?,
        )?;
        if load_balancer_address(&live).is_some() {
            return Ok(live);
        }
        if start.elapsed() >= timeout {
            return Err(ProviderError::Timeout {
                op: format!("load balancer of Service {name}"),
                what: "an address in status.loadBalancer.ingress (check the subnets' \
                       kubernetes.io/role/elb tags and the cluster's events)"
                    .into(),
                secs: timeout.as_secs(),
            });
        }
        crate::engine::events::status(format!("waiting for the load balancer of Service {name}"));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn id_of(live: &Value) -> String {
    let name = live["metadata"]["name"].as_str().unwrap_or_default();
    match live["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn to_json(o: &DynamicObject) -> Result<Value, ProviderError> {
    serde_json::to_value(o).map_err(|e| ProviderError::Props(e.to_string()))
}

impl ObjectProvider {
    async fn apply(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let t = target(&self.kube, desired).await?;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let applied = t
            .api
            .patch(&t.name, &pp, &Patch::Apply(desired))
            .await
            .map_err(api_err(format!("apply {}", t.what)))?;
        let mut live = to_json(&applied)?;
        if t.kind == "Deployment"
            && let Some(timeout) = self.rollout_timeout
        {
            live = wait_rollout(&t.api, &t.name, timeout).await?;
        }
        if t.kind == "Service"
            && live["spec"]["type"] == "LoadBalancer"
            && let Some(timeout) = self.load_balancer_timeout
        {
            live = wait_load_balancer(&t.api, &t.name, timeout).await?;
        }
        Ok(Observed {
            id: id_of(&live),
            props: desired.clone(),
            outputs: outputs(&live),
        })
    }
}

#[async_trait]
impl super::Provider for ObjectProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        // Immutable in the API: a changed selector or namespace means a new object.
        &["metadata.name", "metadata.namespace", "spec.selector"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let m = if desired.is_object() {
            desired
        } else {
            prior.unwrap_or(desired)
        };
        let t = match target(&self.kube, m).await {
            Ok(t) => t,
            // No cluster yet (e.g. EKS before its first `up`), or no longer: nothing
            // exists in it.
            Err(e) if id.is_none() || e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(live) = t
            .api
            .get_opt(&t.name)
            .await
            .map_err(api_err(format!("get {}", t.what)))?
        else {
            return Ok(None);
        };
        let live = to_json(&live)?;
        let mut out = outputs(&live);
        if t.kind == "Deployment"
            && !out.contains_key(super::FAILED_OUTPUT)
            && let Some(why) = crash_looping(&self.kube.client().await?, &live).await?
        {
            out.insert(super::FAILED_OUTPUT.into(), why.into());
        }
        let id = id_of(&live);
        // What would an apply of the declaration change? Ask the server (dry run):
        // defaults it fills in then appear on both sides.
        let pp = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        let dry = t
            .api
            .patch(&t.name, &pp, &Patch::Apply(m))
            .await
            .map_err(api_err(format!("dry-run apply {}", t.what)))?;
        let dry = to_json(&dry)?;
        let props = if normalize(&dry) == normalize(&live) {
            m.clone()
        } else {
            let p = project(&live, m);
            if &p == m {
                // Only something outside the declaration differs (a field the stack
                // no longer applies): show the whole live object.
                normalize(&live)
            } else {
                p
            }
        };
        Ok(Some(Observed {
            id,
            props,
            outputs: out,
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        self.apply(desired).await
    }

    async fn delete(&self, _id: &str, props: &Value) -> Result<(), ProviderError> {
        let t = match target(&self.kube, props).await {
            Ok(t) => t,
            // The cluster went first (deleted outside the stack, or by an earlier
            // `down` that stopped): its objects, and their load balancers' finalizers,
            // went with it, so `down` can finish.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        match t.api.delete(&t.name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(api_err(format!("delete {}", t.what))(e)),
        }
        // Foreground deletion: the object stays until its dependents (ReplicaSets,
        // Pods) and finalizers (a LoadBalancer Service's cloud load balancer) are gone.
        let start = Instant::now();
        loop {
            let gone = t
                .api
                .get_opt(&t.name)
                .await
                .map_err(api_err(format!("get {}", t.what)))?
                .is_none();
            if gone {
                return Ok(());
            }
            if start.elapsed() >= self.delete_timeout {
                return Err(ProviderError::Timeout {
                    op: format!("delete {}", t.what),
                    what: "the object (and its load balancer) to be gone".into(),
                    secs: self.delete_timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Registers the five kinds with one provider.
pub fn register(reg: &mut Registry, p: Arc<ObjectProvider>) {
    for k in KINDS {
        reg.register(k, p.clone());
    }
}

/// Deletes objects labelled as this stack's that are not in `keep` (ids
/// `Kind namespace/name` or `Kind name`). Returns what was deleted.
pub async fn prune(
    client: &kube::Client,
    stack: &str,
    keep: &[String],
) -> Result<Vec<String>, ProviderError> {
    let sel = format!("{LABEL_MANAGED_BY}={FIELD_MANAGER},{LABEL_PART_OF}={stack}");
    let mut deleted = Vec::new();
    // Dependents first: the reverse of the apply order.
    for (av, kind) in [
        ("policy/v1", "PodDisruptionBudget"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("v1", "Namespace"),
    ] {
        let Some((ar, _)) = api_resource(av, kind) else {
            continue;
        };
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let list = all
            .list(&ListParams::default().labels(&sel))
            .await
            .map_err(api_err(format!("list {kind}")))?;
        for o in list.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            let ns = o.metadata.namespace.clone();
            let id = match &ns {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            };
            if keep.contains(&id) {
                continue;
            }
            let api: Api<DynamicObject> = match &ns {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            match api.delete(&name, &DeleteParams::foreground()).await {
                Ok(_) => deleted.push(id),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err(format!("delete {id}"))(e)),
            }
        }
    }
    Ok(deleted)
}

/// The prune id of a manifest (see [`prune`]).
pub fn prune_id(m: &Value) -> String {
    let kind = m["kind"].as_str().unwrap_or_default();
    let name = m["metadata"]["name"].as_str().unwrap_or_default();
    match (kind, m["metadata"]["namespace"].as_str()) {
        ("Namespace", _) | (_, None) => format!("{kind} {name}"),
        (_, Some(ns)) => format!("{kind} {ns}/{name}"),
    }
}

/// The standard labels of a stack's objects.
pub fn labels(stack: &str, app: &str) -> Value {
    json!({
        LABEL_MANAGED_BY: FIELD_MANAGER,
        LABEL_PART_OF: stack,
        "app.kubernetes.io/name": app,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, observed: i64, reason: &str, status: &str) -> Value {
        json!({
            "kind": "Deployment",
            "metadata": {"name": "server", "generation": generation},
            "status": {"observedGeneration": observed, "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                {"type": "Progressing", "status": status, "reason": reason,
                 "message": "ReplicaSet \"server-7d\" has timed out progressing."}
            ]}
        })
    }

    #[test]
    fn a_deployment_whose_rollout_failed_reads_as_failed() {
        let crash_looping = deployment(3, 3, "ProgressDeadlineExceeded", "False");
        let why = outputs(&crash_looping)[crate::providers::FAILED_OUTPUT].clone();
        assert_eq!(
            why,
            "rollout failed (ProgressDeadlineExceeded): ReplicaSet \"server-7d\" has timed out progressing."
        );
        // Healthy, not yet judged for its new spec, or only a local warning: not failed.
        for ok in [
            deployment(3, 3, "NewReplicaSetAvailable", "True"),
            deployment(4, 3, "ProgressDeadlineExceeded", "False"),
            deployment(3, 3, "ErrImagePull", "False"),
        ] {
            assert!(
                !outputs(&ok).contains_key(crate::providers::FAILED_OUTPUT),
                "{ok}"
            );
        }
    }
}
