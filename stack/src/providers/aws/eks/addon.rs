//! An EKS add-on, e.g. `metrics-server`.

use super::delete_and_wait;
use crate::providers::aws::{prelude::*, read_back_and_tag, user_tags, wait_for};
use aws_sdk_eks::client::Waiters;
use aws_sdk_eks::types::ResolveConflicts;

/// The characters of an add-on name.
const NAMES: Charset = Charset {
    name: "[a-z0-9-]",
    allows: |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
};

/// An EKS add-on, e.g. `metrics-server` (the community add-on the HPA's CPU metric
/// needs). Created with `resolveConflicts=OVERWRITE` so it takes over a hand-installed
/// copy; waits for `ACTIVE` after create and update, and for its disappearance after
/// delete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:eks:Addon", checks = Self::checks)]
pub struct Addon {
    /// Cluster name (forces replacement).
    #[resource(replace)]
    pub cluster: Input<String>,
    /// Add-on name, e.g. `metrics-server` (forces replacement).
    #[resource(replace, chars(1..=100, NAMES), label = "add-on name")]
    pub name: String,
    /// Add-on version, e.g. `v0.7.2-eksbuild.1`; `None`: EKS's default for the
    /// cluster's Kubernetes version (then version changes by EKS are not drift).
    #[serde(default)]
    pub version: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Addon {
    /// The version's form.
    fn checks(&self, c: Checks) -> Checks {
        let version = self.version.as_deref();
        c.require(version.is_none_or(|v| v.starts_with('v')), || {
            let v = version.unwrap_or_default();
            format!("add-on version `{v}` must look like v0.7.2-eksbuild.1")
        })
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

fn addon_outputs(name: &str, version: &str, arn: &str) -> Outputs {
    obj(json!({ "name": name, "version": version, "arn": arn }))
}

/// What provides add-on `name` where there is no add-on API (recorded in state only).
fn stand_in_for(name: &str) -> String {
    match name {
        "metrics-server" => "provided by the local control plane (its HPA controller reads \
                             the pods' CPU from their cgroups); recorded in state only"
            .into(),
        other => format!("recorded in state only: no add-on API here, `{other}` does not run"),
    }
}

/// The id of an add-on: `cluster|name`.
fn addon_id(d: &Addon) -> String {
    join_id(d.cluster.as_str(), &d.name)
}

async fn wait_active(c: &Clients, cluster: &str, name: &str) -> Result<(), ProviderError> {
    let t = c.wait_timeout;
    let w = c.eks.wait_until_addon_active().cluster_name(cluster);
    let w = w.addon_name(name).wait(t);
    wait_for("eks:DescribeAddon", "add-on ACTIVE", t, w).await
}

#[async_trait]
impl ResourceProvider for AddonProvider {
    type Resource = Addon;

    async fn read(&self, at: Lookup<'_, Addon>) -> Found<Addon> {
        let (d, prior) = (at.desired, at.prior);
        let key = addon_id(d);
        let id = at.id_or(&key);
        let (cluster, name) = split_id(id);
        let c = match self {
            AddonProvider::Api(c) => c,
            // Exists exactly when the state says it was applied.
            AddonProvider::StateOnly => {
                return Ok(prior.map(|p| Read {
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
            .addon_name(name);
        let r = r.send().await.aws("eks:DescribeAddon").none_if_missing()?;
        let Some(a) = r.as_ref().and_then(|r| r.addon()) else {
            return Ok(None);
        };
        let version = a.addon_version().unwrap_or_default();
        let props = Addon {
            cluster: Input::Value(a.cluster_name().unwrap_or(cluster).to_string()),
            name: a.addon_name().unwrap_or(name).to_string(),
            // Unpinned: whatever EKS chose is what was asked for.
            version: d.version.as_ref().map(|_| version.to_string()),
            tags: user_tags(a.tags().cloned().unwrap_or_default()),
        };
        let outputs = addon_outputs(&props.name, version, a.addon_arn().unwrap_or_default());
        Ok(Some(Read {
            id: addon_id(&props),
            props,
            outputs,
        }))
    }

    async fn create(&self, d: &Addon) -> Result<Created, ProviderError> {
        let AddonProvider::Api(c) = self else {
            crate::engine::events::stand_in(stand_in_for(&d.name));
            return Ok(Created::new(
                addon_id(d),
                addon_outputs(&d.name, "local", ""),
            ));
        };
        let cluster = d.cluster.as_str();
        let r = c
            .eks
            .create_addon()
            .cluster_name(cluster)
            .addon_name(&d.name)
            .set_addon_version(d.version.clone())
            .resolve_conflicts(ResolveConflicts::Overwrite)
            .set_tags(Some(d.tags.clone().into_iter().collect()));
        r.send().await.aws("eks:CreateAddon")?;
        wait_active(c, cluster, &d.name).await?;
        Ok(Created::read_back(addon_id(d)))
    }

    async fn update(&self, id: &str, o: &Addon, d: &Addon) -> Result<Applied, ProviderError> {
        let AddonProvider::Api(c) = self else {
            crate::engine::events::stand_in(stand_in_for(&d.name));
            return Ok(addon_outputs(&d.name, "local", "").into());
        };
        let (cluster, name) = split_id(id);
        if o.version != d.version {
            let r = c.eks.update_addon().cluster_name(cluster).addon_name(name);
            let r = r
                .set_addon_version(d.version.clone())
                .resolve_conflicts(ResolveConflicts::Overwrite);
            r.send().await.aws("eks:UpdateAddon")?;
            wait_active(c, cluster, name).await?;
        }
        read_back_and_tag(self, &c.eks, id, d, &o.tags, &d.tags).await
    }

    async fn delete(&self, id: &str, last: &Addon) -> Result<(), ProviderError> {
        let AddonProvider::Api(c) = self else {
            // Nothing was installed: only the state's record goes.
            crate::engine::events::stand_in(format!(
                "removed from state (no add-on API here: nothing was installed for `{}`)",
                last.name
            ));
            return Ok(());
        };
        let (cluster, name) = split_id(id);
        let r = c.eks.delete_addon().cluster_name(cluster).addon_name(name);
        let r = r.send().await;
        let t = c.wait_timeout;
        let w = c.eks.wait_until_addon_deleted().cluster_name(cluster);
        let w = w.addon_name(name).wait(t);
        let wait = wait_for("eks:DescribeAddon", "add-on deleted", t, w);
        delete_and_wait(r.aws("eks:DeleteAddon"), wait).await
    }
}
