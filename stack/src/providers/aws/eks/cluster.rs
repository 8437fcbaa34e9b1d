//! An EKS cluster.

use super::delete_and_wait;
use crate::providers::FAILED_OUTPUT;
use crate::providers::aws::{prelude::*, read_back_and_tag, same_order, strs, user_tags, wait_for};
use aws_sdk_eks::client::Waiters;
use aws_sdk_eks::types::{
    AuthenticationMode, ClusterStatus, CreateAccessConfigRequest, UpdateAccessConfigRequest,
    VpcConfigRequest,
};

/// An EKS cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:eks:Cluster", checks = Self::checks)]
pub struct Cluster {
    /// Cluster name (forces replacement).
    #[resource(replace, chars(1..=100, Charset::WORD))]
    pub name: String,
    /// Cluster role ARN (forces replacement).
    #[resource(replace)]
    pub role_arn: Input<String>,
    /// Kubernetes version, e.g. `1.31`.
    pub version: String,
    /// Subnets in at least two zones (forces replacement).
    #[resource(replace)]
    pub subnet_ids: Vec<Input<String>>,
    /// Authentication mode; `API_AND_CONFIG_MAP` so access entries work.
    #[resource(one_of("API", "API_AND_CONFIG_MAP", "CONFIG_MAP"))]
    pub access_mode: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Cluster {
    /// The version's form and the subnet count.
    fn checks(&self, c: Checks) -> Checks {
        let version = &self.version;
        let numeric = version.split('.').all(|p| p.parse::<u32>().is_ok());
        c.require(numeric && version.split('.').count() == 2, || {
            format!("version `{version}` must look like 1.31")
        })
        .require(self.subnet_ids.len() >= 2, || {
            "at least two subnets (in two availability zones) are required".into()
        })
    }
}

/// Provider for [`Cluster`].
pub struct ClusterProvider(pub Arc<Clients>);

impl ClusterProvider {
    async fn wait_active(&self, name: &str) -> Result<(), ProviderError> {
        let t = self.0.wait_timeout;
        let w = self.0.eks.wait_until_cluster_active().name(name).wait(t);
        wait_for("eks:DescribeCluster", "cluster ACTIVE", t, w).await
    }
}

#[async_trait]
impl ResourceProvider for ClusterProvider {
    type Resource = Cluster;

    async fn read(&self, at: Lookup<'_, Cluster>) -> Found<Cluster> {
        let (d, prior) = (at.desired, at.prior);
        let name = at.id_or(&d.name);
        let describe = || async {
            let r = self.0.eks.describe_cluster().name(name).send().await;
            r.aws("eks:DescribeCluster").none_if_missing()
        };
        let mut r = describe().await?;
        // One left mid-change (a killed run): wait for it as the run would have.
        if r.as_ref()
            .and_then(|r| r.cluster())
            .and_then(|c| c.status())
            .is_some_and(|s| {
                matches!(
                    s,
                    ClusterStatus::Creating | ClusterStatus::Updating | ClusterStatus::Pending
                )
            })
        {
            self.wait_active(name).await?;
            r = describe().await?;
        }
        let Some(c) = r.as_ref().and_then(|r| r.cluster()) else {
            return Ok(None);
        };
        // Some endpoints (moto) do not report the access config: keep what we applied.
        let access_mode = c
            .access_config()
            .and_then(|a| a.authentication_mode())
            .map(|m| m.as_str())
            .or(prior.map(|p| p.access_mode.as_str()))
            .unwrap_or(&d.access_mode)
            .to_string();
        let subnets = c
            .resources_vpc_config()
            .map(|v| v.subnet_ids().to_vec())
            .unwrap_or_default();
        let props = Cluster {
            name: c.name().unwrap_or(name).to_string(),
            role_arn: Input::Value(c.role_arn().unwrap_or_default().to_string()),
            version: c.version().unwrap_or_default().to_string(),
            subnet_ids: same_order(&d.subnet_ids, subnets),
            access_mode,
            tags: user_tags(c.tags().cloned().unwrap_or_default()),
        };
        let ca = c.certificate_authority().and_then(|a| a.data());
        let mut outputs = obj(json!({
            "name": props.name,
            "arn": c.arn().unwrap_or_default(),
            "endpoint": c.endpoint().unwrap_or_default(),
            "certificate_authority": ca.unwrap_or_default(),
        }));
        if let Some(status) = c
            .status()
            .filter(|s| matches!(s, ClusterStatus::Failed | ClusterStatus::Deleting))
        {
            let issues = c.health().map(|h| h.issues()).unwrap_or_default();
            let issues = issues.iter().map(|i| {
                let code = i.code().map_or("", |c| c.as_str());
                (code, i.message().unwrap_or_default())
            });
            outputs.insert(
                FAILED_OUTPUT.into(),
                super::failure_reason(status.as_str(), issues).into(),
            );
        }
        Ok(Some(Read {
            id: props.name.clone(),
            props,
            outputs,
        }))
    }

    async fn create(&self, d: &Cluster) -> Result<Created, ProviderError> {
        let vpc = VpcConfigRequest::builder().set_subnet_ids(Some(strs(&d.subnet_ids)));
        let mode = AuthenticationMode::from(d.access_mode.as_str());
        let access = CreateAccessConfigRequest::builder().authentication_mode(mode);
        let r = self
            .0
            .eks
            .create_cluster()
            .name(&d.name)
            .role_arn(d.role_arn.as_str())
            .version(&d.version)
            .resources_vpc_config(vpc.build())
            .access_config(access.build())
            .set_tags(Some(d.tags.clone().into_iter().collect()));
        r.send().await.aws("eks:CreateCluster")?;
        self.wait_active(&d.name).await?;
        Ok(Created::read_back(&d.name))
    }

    async fn update(&self, id: &str, o: &Cluster, d: &Cluster) -> Result<Applied, ProviderError> {
        let eks = &self.0.eks;
        if o.version != d.version {
            let r = eks.update_cluster_version().name(id).version(&d.version);
            r.send().await.aws("eks:UpdateClusterVersion")?;
            self.wait_active(id).await?;
        }
        if o.access_mode != d.access_mode {
            let mode = AuthenticationMode::from(d.access_mode.as_str());
            let access = UpdateAccessConfigRequest::builder().authentication_mode(mode);
            let r = eks
                .update_cluster_config()
                .name(id)
                .access_config(access.build());
            r.send().await.aws("eks:UpdateClusterConfig")?;
            self.wait_active(id).await?;
        }
        read_back_and_tag(self, eks, id, d, &o.tags, &d.tags).await
    }

    async fn delete(&self, id: &str, _last: &Cluster) -> Result<(), ProviderError> {
        let r = self.0.eks.delete_cluster().name(id).send().await;
        let t = self.0.wait_timeout;
        let w = self.0.eks.wait_until_cluster_deleted().name(id).wait(t);
        let wait = wait_for("eks:DescribeCluster", "cluster deleted", t, w);
        delete_and_wait(r.aws("eks:DeleteCluster"), wait).await
    }
}
