//! A managed node group.

use super::delete_and_wait;
use crate::providers::FAILED_OUTPUT;
use crate::providers::aws::{prelude::*, read_back_and_tag, same_order, strs, user_tags, wait_for};
use aws_sdk_eks::client::Waiters;
use aws_sdk_eks::types::{NodegroupScalingConfig, NodegroupStatus};

/// A managed node group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:eks:NodeGroup", checks = Self::checks)]
pub struct NodeGroup {
    /// Cluster name.
    #[resource(replace)]
    pub cluster: Input<String>,
    /// Node group name.
    #[resource(replace, len = 1..=63)]
    pub name: String,
    /// Node role ARN.
    #[resource(replace)]
    pub node_role: Input<String>,
    /// Subnets.
    #[resource(replace)]
    pub subnet_ids: Vec<Input<String>>,
    /// Instance types, e.g. `["t3.large"]` (forces replacement).
    #[resource(replace)]
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

impl NodeGroup {
    /// The instance types' form, the scaling bounds and the subnet count.
    fn checks(&self, c: Checks) -> Checks {
        let (min, desired, max) = (self.min_size, self.desired_size, self.max_size);
        let c = c.require(!self.instance_types.is_empty(), || {
            "at least one instance type is required".into()
        });
        let c = self.instance_types.iter().fold(c, |c, t| {
            c.require(valid_instance_type(t), || {
                format!("instance type `{t}` is not of the form family.size (e.g. t3.large)")
            })
        });
        c.require(0 <= min && min <= desired && desired <= max && max >= 1, || {
            format!(
                "scaling must satisfy 0 <= min ({min}) <= desired ({desired}) <= max ({max}), max >= 1"
            )
        })
        .require(!self.subnet_ids.is_empty(), || {
            "at least one subnet is required".into()
        })
    }
}

/// Provider for [`NodeGroup`]; id `cluster|nodegroup`.
pub struct NodeGroupProvider(pub Arc<Clients>);

impl NodeGroupProvider {
    async fn wait_active(&self, cluster: &str, name: &str) -> Result<(), ProviderError> {
        let t = self.0.wait_timeout;
        let w = self.0.eks.wait_until_nodegroup_active();
        let w = w.cluster_name(cluster).nodegroup_name(name).wait(t);
        wait_for("eks:DescribeNodegroup", "node group ACTIVE", t, w).await
    }
}

/// Why a node group is broken (CREATE_FAILED, DEGRADED, DELETE_FAILED, or being
/// deleted), with its health issues; `None` when it is usable.
fn failure(n: &aws_sdk_eks::types::Nodegroup) -> Option<String> {
    let status = n.status()?;
    if matches!(
        status,
        NodegroupStatus::Active | NodegroupStatus::Creating | NodegroupStatus::Updating
    ) {
        return None;
    }
    let issues = n.health().map(|h| h.issues()).unwrap_or_default();
    let issues = issues.iter().map(|i| {
        let code = i.code().map_or("", |c| c.as_str());
        (code, i.message().unwrap_or_default())
    });
    Some(super::failure_reason(status.as_str(), issues))
}

fn scaling(d: &NodeGroup) -> NodegroupScalingConfig {
    NodegroupScalingConfig::builder()
        .min_size(d.min_size)
        .desired_size(d.desired_size)
        .max_size(d.max_size)
        .build()
}

#[async_trait]
impl ResourceProvider for NodeGroupProvider {
    type Resource = NodeGroup;

    async fn read(&self, at: Lookup<'_, NodeGroup>) -> Found<NodeGroup> {
        let d = at.desired;
        let key = join_id(d.cluster.as_str(), &d.name);
        let (cluster, name) = split_id(at.id_or(&key));
        let describe = || async {
            let r = self.0.eks.describe_nodegroup().cluster_name(cluster);
            let r = r.nodegroup_name(name).send().await;
            r.aws("eks:DescribeNodegroup").none_if_missing()
        };
        let mut r = describe().await?;
        // One left mid-change (a killed run): wait for it as the run would have.
        if r.as_ref()
            .and_then(|r| r.nodegroup())
            .and_then(|n| n.status())
            .is_some_and(|s| matches!(s, NodegroupStatus::Creating | NodegroupStatus::Updating))
        {
            self.wait_active(cluster, name).await?;
            r = describe().await?;
        }
        let Some(n) = r.as_ref().and_then(|r| r.nodegroup()) else {
            return Ok(None);
        };
        let s = n.scaling_config();
        let props = NodeGroup {
            cluster: Input::Value(n.cluster_name().unwrap_or(cluster).to_string()),
            name: n.nodegroup_name().unwrap_or(name).to_string(),
            node_role: Input::Value(n.node_role().unwrap_or_default().to_string()),
            subnet_ids: same_order(&d.subnet_ids, n.subnets().to_vec()),
            instance_types: n.instance_types().to_vec(),
            min_size: s.and_then(|s| s.min_size()).unwrap_or(0),
            desired_size: s.and_then(|s| s.desired_size()).unwrap_or(0),
            max_size: s.and_then(|s| s.max_size()).unwrap_or(0),
            tags: user_tags(n.tags().cloned().unwrap_or_default()),
        };
        let arn = n.nodegroup_arn().unwrap_or_default();
        let mut outputs = obj(json!({ "name": props.name, "arn": arn }));
        if let Some(reason) = failure(n) {
            outputs.insert(FAILED_OUTPUT.into(), reason.into());
        }
        Ok(Some(Read {
            id: join_id(cluster, name),
            props,
            outputs,
        }))
    }

    async fn create(&self, d: &NodeGroup) -> Result<Created, ProviderError> {
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
            .scaling_config(scaling(d))
            .set_tags(Some(d.tags.clone().into_iter().collect()));
        r.send().await.aws("eks:CreateNodegroup")?;
        self.wait_active(cluster, &d.name).await?;
        Ok(Created::read_back(join_id(cluster, &d.name)))
    }

    async fn update(
        &self,
        id: &str,
        o: &NodeGroup,
        d: &NodeGroup,
    ) -> Result<Applied, ProviderError> {
        let (cluster, name) = split_id(id);
        if (o.min_size, o.desired_size, o.max_size) != (d.min_size, d.desired_size, d.max_size) {
            let r = self.0.eks.update_nodegroup_config().cluster_name(cluster);
            let r = r
                .nodegroup_name(name)
                .scaling_config(scaling(d))
                .send()
                .await;
            r.aws("eks:UpdateNodegroupConfig")?;
            self.wait_active(cluster, name).await?;
        }
        read_back_and_tag(self, &self.0.eks, id, d, &o.tags, &d.tags).await
    }

    async fn delete(&self, id: &str, _last: &NodeGroup) -> Result<(), ProviderError> {
        let (cluster, name) = split_id(id);
        let eks = &self.0.eks;
        let r = eks
            .delete_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(name);
        let r = r.send().await;
        let t = self.0.wait_timeout;
        let w = eks.wait_until_nodegroup_deleted().cluster_name(cluster);
        let w = w.nodegroup_name(name).wait(t);
        let wait = wait_for("eks:DescribeNodegroup", "node group deleted", t, w);
        delete_and_wait(r.aws("eks:DeleteNodegroup"), wait).await
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;
    use aws_sdk_eks::types::{Issue, Nodegroup, NodegroupHealth, NodegroupIssueCode};

    #[test]
    fn a_failed_node_group_names_its_status_and_health_issues() {
        let failed = Nodegroup::builder()
            .status(NodegroupStatus::CreateFailed)
            .health(
                NodegroupHealth::builder()
                    .issues(
                        Issue::builder()
                            .code(NodegroupIssueCode::NodeCreationFailure)
                            .message("Instances failed to join the kubernetes cluster")
                            .build(),
                    )
                    .build(),
            )
            .build();
        assert_eq!(
            failure(&failed).as_deref(),
            Some(
                "CREATE_FAILED (NodeCreationFailure: Instances failed to join the kubernetes cluster)"
            )
        );
        let degraded = Nodegroup::builder()
            .status(NodegroupStatus::Degraded)
            .build();
        assert_eq!(failure(&degraded).as_deref(), Some("DEGRADED"));
        for fine in [NodegroupStatus::Active, NodegroupStatus::Creating] {
            assert_eq!(failure(&Nodegroup::builder().status(fine).build()), None);
        }
    }
}
