//! EKS clusters and managed node groups. Both are slow in AWS: creates, updates and
//! deletes wait with the SDK waiters (bounded by `STACK_WAIT_TIMEOUT_SECS`).

use async_trait::async_trait;
use aws_sdk_eks::client::Waiters;
use aws_sdk_eks::types::{
    AuthenticationMode, CreateAccessConfigRequest, NodegroupScalingConfig, ResolveConflicts,
    UpdateAccessConfigRequest, VpcConfigRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Clients, Tags, api, none_if_missing, obj, split_id, wait_for};
use crate::engine::{Input, Resource};
use crate::error::ProviderError;
use crate::providers::{Observed, Provider, props, to_value};

/// Kind name of [`Cluster`].
pub const CLUSTER_KIND: &str = "aws:eks:Cluster";
/// Kind name of [`NodeGroup`].
pub const NODEGROUP_KIND: &str = "aws:eks:NodeGroup";
/// Kind name of [`Addon`].
pub const ADDON_KIND: &str = "aws:eks:Addon";

/// An EKS cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cluster {
    /// Cluster name (forces replacement).
    pub name: String,
    /// Cluster role ARN (forces replacement).
    pub role_arn: Input<String>,
    /// Kubernetes version, e.g. `1.31`.
    pub version: String,
    /// Subnets in at least two zones (forces replacement).
    pub subnet_ids: Vec<Input<String>>,
    /// Authentication mode; `API_AND_CONFIG_MAP` so access entries work.
    pub access_mode: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Resource for Cluster {
    const KIND: &'static str = CLUSTER_KIND;
    fn validate(&self) -> Vec<String> {
        let mut e = vec![];
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.name.is_empty() || self.name.len() > 100 || !self.name.chars().all(ok) {
            e.push(format!(
                "name `{}` must be 1-100 chars of [A-Za-z0-9_-]",
                self.name
            ));
        }
        if !self.version.split('.').all(|p| p.parse::<u32>().is_ok())
            || self.version.split('.').count() != 2
        {
            e.push(format!("version `{}` must look like 1.31", self.version));
        }
        if self.subnet_ids.len() < 2 {
            e.push("at least two subnets (in two availability zones) are required".into());
        }
        if !["API", "API_AND_CONFIG_MAP", "CONFIG_MAP"].contains(&self.access_mode.as_str()) {
            e.push(format!(
                "access_mode `{}` must be API, API_AND_CONFIG_MAP or CONFIG_MAP",
                self.access_mode
            ));
        }
        e
    }
}

/// A managed node group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeGroup {
    /// Cluster name.
    pub cluster: Input<String>,
    /// Node group name.
    pub name: String,
    /// Node role ARN.
    pub node_role: Input<String>,
    /// Subnets.
    pub subnet_ids: Vec<Input<String>>,
    /// Instance types, e.g. `["t3.large"]` (forces replacement).
    pub instance_types: Vec<String>,
    /// Minimum size.
    pub min_size: i32,
    /// Desired size.
    pub desired_size: i32,
    /// Maximum size.
    pub max_size: i32,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// Whether `t` looks like an EC2 instance type (`family.size`, e.g. `m6i.xlarge`).
pub fn valid_instance_type(t: &str) -> bool {
    let Some((family, size)) = t.split_once('.') else {
        return false;
    };
    family
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase())
        && family
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !size.is_empty()
        && size
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl Resource for NodeGroup {
    const KIND: &'static str = NODEGROUP_KIND;
    fn validate(&self) -> Vec<String> {
        let mut e = vec![];
        if self.name.is_empty() || self.name.len() > 63 {
            e.push(format!("name `{}` must be 1-63 chars", self.name));
        }
        if self.instance_types.is_empty() {
            e.push("at least one instance type is required".into());
        }
        for t in &self.instance_types {
            if !valid_instance_type(t) {
                e.push(format!(
                    "instance type `{t}` is not of the form family.size (e.g. t3.large)"
                ));
            }
        }
        if !(0 <= self.min_size
            && self.min_size <= self.desired_size
            && self.desired_size <= self.max_size
            && self.max_size >= 1)
        {
            e.push(format!(
                "scaling must satisfy 0 <= min ({}) <= desired ({}) <= max ({}), max >= 1",
                self.min_size, self.desired_size, self.max_size
            ));
        }
        if self.subnet_ids.is_empty() {
            e.push("at least one subnet is required".into());
        }
        e
    }
}

/// Orders `observed` like `desired` when both hold the same set (the API does not keep
/// the declared order).
pub(crate) fn same_order(desired: &[Input<String>], observed: Vec<String>) -> Vec<Input<String>> {
    let mut a: Vec<&str> = desired.iter().map(Input::as_str).collect();
    let mut b: Vec<&str> = observed.iter().map(String::as_str).collect();
    a.sort_unstable();
    b.sort_unstable();
    if a == b {
        desired.to_vec()
    } else {
        observed.into_iter().map(Input::Value).collect()
    }
}

fn strs(v: &[Input<String>]) -> Vec<String> {
    v.iter().map(|s| s.as_str().to_string()).collect()
}

async fn retag(c: &Clients, arn: &str, old: &Tags, new: &Tags) -> Result<(), ProviderError> {
    let set = |t: Tags| async move {
        let r = c
            .eks
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(t.into_iter().collect()));
        r.send()
            .await
            .map(|_| ())
            .map_err(|e| api("eks:TagResource", e))
    };
    let rm = |k: Vec<String>| async move {
        let r = c
            .eks
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(k));
        r.send()
            .await
            .map(|_| ())
            .map_err(|e| api("eks:UntagResource", e))
    };
    super::retag(old, new, set, rm).await
}

/// The end of every EKS update: retag the resource just read (`now`) and report it.
async fn updated(
    c: &Clients,
    id: &str,
    now: Option<Observed>,
    old: &Tags,
    new: &Tags,
    desired: &Value,
) -> Result<Observed, ProviderError> {
    let done = Observed::applied(id, desired, now);
    retag(c, &super::arn_output(&done.outputs), old, new).await?;
    Ok(done)
}

/// Provider for [`Cluster`].
pub struct ClusterProvider(pub Arc<Clients>);

impl ClusterProvider {
    async fn wait_active(&self, name: &str) -> Result<(), ProviderError> {
        let t = self.0.wait_timeout;
        wait_for(
            "eks:DescribeCluster",
            "cluster ACTIVE",
            t,
            self.0.eks.wait_until_cluster_active().name(name).wait(t),
        )
        .await
    }
}

#[async_trait]
impl Provider for ClusterProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["name", "role_arn", "subnet_ids"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Cluster = props(desired)?;
        let name = id.unwrap_or(&d.name);
        let r = self.0.eks.describe_cluster().name(name).send().await;
        let Some(r) = none_if_missing(r.map_err(|e| api("eks:DescribeCluster", e)))? else {
            return Ok(None);
        };
        let Some(c) = r.cluster() else {
            return Ok(None);
        };
        // Some endpoints (moto) do not report the access config: keep what we applied.
        let access_mode = c
            .access_config()
            .and_then(|a| a.authentication_mode())
            .map(|m| m.as_str().to_string())
            .or_else(|| {
                prior
                    .and_then(|p| p.get("access_mode"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| d.access_mode.clone());
        let subnets = c
            .resources_vpc_config()
            .map(|v| v.subnet_ids().to_vec())
            .unwrap_or_default();
        let obs = Cluster {
            name: c.name().unwrap_or(name).to_string(),
            role_arn: Input::Value(c.role_arn().unwrap_or_default().to_string()),
            version: c.version().unwrap_or_default().to_string(),
            subnet_ids: same_order(&d.subnet_ids, subnets),
            access_mode,
            tags: super::user_tags(c.tags().cloned().unwrap_or_default()),
        };
        let outputs = json!({
            "name": obs.name,
            "arn": c.arn().unwrap_or_default(),
            "endpoint": c.endpoint().unwrap_or_default(),
            "certificate_authority": c.certificate_authority().and_then(|a| a.data()).unwrap_or_default(),
        });
        Ok(Some(Observed {
            id: obs.name.clone(),
            props: to_value(&obs)?,
            outputs: obj(outputs),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Cluster = props(desired)?;
        let r = self
            .0
            .eks
            .create_cluster()
            .name(&d.name)
            .role_arn(d.role_arn.as_str())
            .version(&d.version)
            .resources_vpc_config(
                VpcConfigRequest::builder()
                    .set_subnet_ids(Some(strs(&d.subnet_ids)))
                    .build(),
            )
            .access_config(
                CreateAccessConfigRequest::builder()
                    .authentication_mode(AuthenticationMode::from(d.access_mode.as_str()))
                    .build(),
            )
            .set_tags(Some(d.tags.clone().into_iter().collect()))
            .send()
            .await;
        r.map_err(|e| api("eks:CreateCluster", e))?;
        self.wait_active(&d.name).await?;
        let now = self.read(Some(&d.name), desired, Some(desired)).await?;
        Ok(Observed::applied(d.name.clone(), desired, now))
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: Cluster = props(observed)?;
        let d: Cluster = props(desired)?;
        if o.version != d.version {
            let r = self
                .0
                .eks
                .update_cluster_version()
                .name(id)
                .version(&d.version)
                .send()
                .await;
            r.map_err(|e| api("eks:UpdateClusterVersion", e))?;
            self.wait_active(id).await?;
        }
        if o.access_mode != d.access_mode {
            let r = self
                .0
                .eks
                .update_cluster_config()
                .name(id)
                .access_config(
                    UpdateAccessConfigRequest::builder()
                        .authentication_mode(AuthenticationMode::from(d.access_mode.as_str()))
                        .build(),
                )
                .send()
                .await;
            r.map_err(|e| api("eks:UpdateClusterConfig", e))?;
            self.wait_active(id).await?;
        }
        let now = self.read(Some(id), desired, Some(desired)).await?;
        updated(&self.0, id, now, &o.tags, &d.tags, desired).await
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let r = self.0.eks.delete_cluster().name(id).send().await;
        match r.map_err(|e| api("eks:DeleteCluster", e)) {
            Err(e) if e.is_not_found() => return Ok(()),
            r => r?,
        };
        let t = self.0.wait_timeout;
        wait_for(
            "eks:DescribeCluster",
            "cluster deleted",
            t,
            self.0.eks.wait_until_cluster_deleted().name(id).wait(t),
        )
        .await
    }
}

/// Provider for [`NodeGroup`]; id `cluster|nodegroup`.
pub struct NodeGroupProvider(pub Arc<Clients>);

impl NodeGroupProvider {
    async fn wait_active(&self, cluster: &str, name: &str) -> Result<(), ProviderError> {
        let t = self.0.wait_timeout;
        wait_for(
            "eks:DescribeNodegroup",
            "node group ACTIVE",
            t,
            self.0
                .eks
                .wait_until_nodegroup_active()
                .cluster_name(cluster)
                .nodegroup_name(name)
                .wait(t),
        )
        .await
    }
}

fn scaling(d: &NodeGroup) -> NodegroupScalingConfig {
    NodegroupScalingConfig::builder()
        .min_size(d.min_size)
        .desired_size(d.desired_size)
        .max_size(d.max_size)
        .build()
}

#[async_trait]
impl Provider for NodeGroupProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &[
            "cluster",
            "name",
            "node_role",
            "subnet_ids",
            "instance_types",
        ]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: NodeGroup = props(desired)?;
        let key = format!("{}|{}", d.cluster.as_str(), d.name);
        let (cluster, name) = split_id(id.unwrap_or(&key));
        let r = self
            .0
            .eks
            .describe_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .send()
            .await;
        let Some(r) = none_if_missing(r.map_err(|e| api("eks:DescribeNodegroup", e)))? else {
            return Ok(None);
        };
        let Some(n) = r.nodegroup() else {
            return Ok(None);
        };
        let s = n.scaling_config();
        let obs = NodeGroup {
            cluster: Input::Value(n.cluster_name().unwrap_or(cluster).to_string()),
            name: n.nodegroup_name().unwrap_or(name).to_string(),
            node_role: Input::Value(n.node_role().unwrap_or_default().to_string()),
            subnet_ids: same_order(&d.subnet_ids, n.subnets().to_vec()),
            instance_types: n.instance_types().to_vec(),
            min_size: s.and_then(|s| s.min_size()).unwrap_or(0),
            desired_size: s.and_then(|s| s.desired_size()).unwrap_or(0),
            max_size: s.and_then(|s| s.max_size()).unwrap_or(0),
            tags: super::user_tags(n.tags().cloned().unwrap_or_default()),
        };
        let outputs = json!({ "name": obs.name, "arn": n.nodegroup_arn().unwrap_or_default() });
        Ok(Some(Observed {
            id: format!("{cluster}|{name}"),
            props: to_value(&obs)?,
            outputs: obj(outputs),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: NodeGroup = props(desired)?;
        let cluster = d.cluster.as_str();
        let r = self
            .0
            .eks
            .create_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(&d.name)
            .node_role(d.node_role.as_str())
            .set_subnets(Some(strs(&d.subnet_ids)))
            .set_instance_types(Some(d.instance_types.clone()))
            .scaling_config(scaling(&d))
            .set_tags(Some(d.tags.clone().into_iter().collect()))
            .send()
            .await;
        r.map_err(|e| api("eks:CreateNodegroup", e))?;
        self.wait_active(cluster, &d.name).await?;
        let id = format!("{cluster}|{}", d.name);
        let now = self.read(Some(&id), desired, None).await?;
        Ok(Observed::applied(id, desired, now))
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: NodeGroup = props(observed)?;
        let d: NodeGroup = props(desired)?;
        let (cluster, name) = split_id(id);
        if (o.min_size, o.desired_size, o.max_size) != (d.min_size, d.desired_size, d.max_size) {
            let r = self
                .0
                .eks
                .update_nodegroup_config()
                .cluster_name(cluster)
                .nodegroup_name(name)
                .scaling_config(scaling(&d))
                .send()
                .await;
            r.map_err(|e| api("eks:UpdateNodegroupConfig", e))?;
            self.wait_active(cluster, name).await?;
        }
        let now = self.read(Some(id), desired, None).await?;
        updated(&self.0, id, now, &o.tags, &d.tags, desired).await
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let (cluster, name) = split_id(id);
        let r = self
            .0
            .eks
            .delete_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .send()
            .await;
        match r.map_err(|e| api("eks:DeleteNodegroup", e)) {
            Err(e) if e.is_not_found() => return Ok(()),
            r => r?,
        };
        let t = self.0.wait_timeout;
        wait_for(
            "eks:DescribeNodegroup",
            "node group deleted",
            t,
            self.0
                .eks
                .wait_until_nodegroup_deleted()
                .cluster_name(cluster)
                .nodegroup_name(name)
                .wait(t),
        )
        .await
    }
}

/// An EKS add-on, e.g. `metrics-server` (the community add-on the HPA's CPU metric
/// needs). Created with `resolveConflicts=OVERWRITE` so it takes over a hand-installed
/// copy; waits for `ACTIVE` after create and update, and for its disappearance after
/// delete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Addon {
    /// Cluster name (forces replacement).
    pub cluster: Input<String>,
    /// Add-on name, e.g. `metrics-server` (forces replacement).
    pub name: String,
    /// Add-on version, e.g. `v0.7.2-eksbuild.1`; `None`: EKS's default for the
    /// cluster's Kubernetes version (then version changes by EKS are not drift).
    #[serde(default)]
    pub version: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Resource for Addon {
    const KIND: &'static str = ADDON_KIND;
    fn validate(&self) -> Vec<String> {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        let mut e = vec![];
        if self.name.is_empty() || self.name.len() > 100 || !self.name.chars().all(ok) {
            e.push(format!(
                "add-on name `{}` must be 1-100 chars of [a-z0-9-]",
                self.name
            ));
        }
        if self.version.as_deref().is_some_and(|v| !v.starts_with('v')) {
            e.push(format!(
                "add-on version `{}` must look like v0.7.2-eksbuild.1",
                self.version.as_deref().unwrap_or_default()
            ));
        }
        e
    }
}

/// Provider for [`Addon`]; id `cluster|addon`.
pub enum AddonProvider {
    /// The EKS add-on API (`CreateAddon`, `DescribeAddon`, `UpdateAddon`,
    /// `DeleteAddon`).
    Api(Arc<Clients>),
    /// An endpoint without the add-on API (moto 5.2 has none) and no cluster to put
    /// it in: the add-on is recorded in state only, so the local stack has the same
    /// shape and order as on AWS. Its `version` output is `local`.
    StateOnly,
}

fn addon_outputs(name: &str, version: &str, arn: &str) -> serde_json::Map<String, Value> {
    let v = json!({ "name": name, "version": version, "arn": arn });
    obj(v)
}

impl AddonProvider {
    async fn wait_active(c: &Clients, cluster: &str, name: &str) -> Result<(), ProviderError> {
        let t = c.wait_timeout;
        wait_for(
            "eks:DescribeAddon",
            "add-on ACTIVE",
            t,
            c.eks
                .wait_until_addon_active()
                .cluster_name(cluster)
                .addon_name(name)
                .wait(t),
        )
        .await
    }
}

#[async_trait]
impl Provider for AddonProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["cluster", "name"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Addon = props(desired)?;
        let key = format!("{}|{}", d.cluster.as_str(), d.name);
        let id = id.unwrap_or(&key);
        let (cluster, name) = split_id(id);
        let c = match self {
            AddonProvider::Api(c) => c,
            // Exists exactly when the state says it was applied.
            AddonProvider::StateOnly => {
                return Ok(prior.map(|p| Observed {
                    id: id.into(),
                    props: p.clone(),
                    outputs: addon_outputs(name, "local", ""),
                }));
            }
        };
        let r = c
            .eks
            .describe_addon()
            .cluster_name(cluster)
            .addon_name(name)
            .send()
            .await;
        let Some(r) = none_if_missing(r.map_err(|e| api("eks:DescribeAddon", e)))? else {
            return Ok(None);
        };
        let Some(a) = r.addon() else {
            return Ok(None);
        };
        let version = a.addon_version().unwrap_or_default();
        let obs = Addon {
            cluster: Input::Value(a.cluster_name().unwrap_or(cluster).to_string()),
            name: a.addon_name().unwrap_or(name).to_string(),
            // Unpinned: whatever EKS chose is what was asked for.
            version: d.version.as_ref().map(|_| version.to_string()),
            tags: super::user_tags(a.tags().cloned().unwrap_or_default()),
        };
        let outputs = addon_outputs(&obs.name, version, a.addon_arn().unwrap_or_default());
        Ok(Some(Observed {
            id: format!("{}|{}", obs.cluster.as_str(), obs.name),
            props: to_value(&obs)?,
            outputs,
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Addon = props(desired)?;
        let cluster = d.cluster.as_str();
        let id = format!("{cluster}|{}", d.name);
        let AddonProvider::Api(c) = self else {
            return Ok(Observed {
                id,
                props: desired.clone(),
                outputs: addon_outputs(&d.name, "local", ""),
            });
        };
        let r = c
            .eks
            .create_addon()
            .cluster_name(cluster)
            .addon_name(&d.name)
            .set_addon_version(d.version.clone())
            .resolve_conflicts(ResolveConflicts::Overwrite)
            .set_tags(Some(d.tags.clone().into_iter().collect()))
            .send()
            .await;
        r.map_err(|e| api("eks:CreateAddon", e))?;
        Self::wait_active(c, cluster, &d.name).await?;
        let now = self.read(Some(&id), desired, None).await?;
        Ok(Observed::applied(id, desired, now))
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let AddonProvider::Api(c) = self else {
            return self.create(desired).await;
        };
        let o: Addon = props(observed)?;
        let d: Addon = props(desired)?;
        let (cluster, name) = split_id(id);
        if o.version != d.version {
            let r = c
                .eks
                .update_addon()
                .cluster_name(cluster)
                .addon_name(name)
                .set_addon_version(d.version.clone())
                .resolve_conflicts(ResolveConflicts::Overwrite)
                .send()
                .await;
            r.map_err(|e| api("eks:UpdateAddon", e))?;
            Self::wait_active(c, cluster, name).await?;
        }
        let now = self.read(Some(id), desired, None).await?;
        updated(c, id, now, &o.tags, &d.tags, desired).await
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let AddonProvider::Api(c) = self else {
            return Ok(());
        };
        let (cluster, name) = split_id(id);
        let r = c
            .eks
            .delete_addon()
            .cluster_name(cluster)
            .addon_name(name)
            .send()
            .await;
        match r.map_err(|e| api("eks:DeleteAddon", e)) {
            Err(e) if e.is_not_found() => return Ok(()),
            r => r?,
        };
        let t = c.wait_timeout;
        wait_for(
            "eks:DescribeAddon",
            "add-on deleted",
            t,
            c.eks
                .wait_until_addon_deleted()
                .cluster_name(cluster)
                .addon_name(name)
                .wait(t),
        )
        .await
    }
}
