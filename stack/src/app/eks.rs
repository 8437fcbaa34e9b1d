//! EKS: the cluster and node roles, the cluster (access mode `API_AND_CONFIG_MAP`) and
//! a managed node group, after its role policies and the network's egress.

use super::{eks_versions, managed_policy};
use crate::config::Config;
use crate::engine::{Handle, Stack};
use crate::providers::aws::{eks, iam};

use super::network::Network;

const EKS_CLUSTER: &str = "AmazonEKSClusterPolicy";
const EKS_NODE: [&str; 3] = [
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
];

/// EC2's service principal: `ec2.amazonaws.com.cn` in the China regions, where EC2
/// alone among the services here takes the regional DNS suffix.
fn ec2_principal(region: &str) -> String {
    format!("ec2.{}", crate::providers::aws::dns_suffix(region))
}

/// The cluster and its node group.
pub struct Eks {
    /// The cluster.
    pub cluster: Handle<eks::Cluster>,
    /// The managed node group (nothing runs in the cluster before it).
    pub nodes: Handle<eks::NodeGroup>,
}

/// Declares the cluster and its nodes in `net`.
pub fn declare(s: &mut Stack, cfg: &Config, net: Network) -> Eks {
    let p = &cfg.prefix;
    check_version(s, &cfg.eks.version, eks_versions::today());
    let Network { subnets, egress } = net;
    let cluster_role = s.add(
        "eks-cluster-role",
        iam::Role::for_service(format!("{p}-eks-cluster"), "eks.amazonaws.com"),
    );
    let cluster_attach = s.add(
        "eks-cluster-role-policy",
        iam::RolePolicyAttachment {
            role: cluster_role.output("name").into(),
            policy_arn: managed_policy(&cfg.region, EKS_CLUSTER),
        },
    );
    let node_role = s.add(
        "eks-node-role",
        iam::Role::for_service(format!("{p}-eks-node"), &ec2_principal(&cfg.region)),
    );
    let node_attach: Vec<_> = EKS_NODE
        .iter()
        .enumerate()
        .map(|(i, name)| {
            s.add(
                &format!("eks-node-role-policy-{i}"),
                iam::RolePolicyAttachment {
                    role: node_role.output("name").into(),
                    policy_arn: managed_policy(&cfg.region, name),
                },
            )
        })
        .collect();
    let cluster = s.add(
        "eks-cluster",
        eks::Cluster {
            name: p.clone(),
            role_arn: cluster_role.output("arn").into(),
            version: cfg.eks.version.clone(),
            subnet_ids: subnets.clone(),
            access_mode: "API_AND_CONFIG_MAP".into(),
            tags: Default::default(),
        },
    );
    s.depends_on(&cluster, &cluster_attach);
    let nodes = s.add(
        "eks-nodes",
        eks::NodeGroup {
            cluster: cluster.output("name").into(),
            name: format!("{p}-nodes"),
            node_role: node_role.output("arn").into(),
            subnet_ids: subnets,
            instance_types: vec![cfg.eks.instance_type.clone()],
            min_size: cfg.eks.min_size,
            desired_size: cfg.eks.desired_size,
            max_size: cfg.eks.max_size,
            tags: Default::default(),
        },
    );
    for a in &node_attach {
        s.depends_on(&nodes, a);
    }
    if let Some(rt) = &egress {
        s.depends_on(&nodes, rt);
    }

    Eks { cluster, nodes }
}

/// A version past extended support is refused (EKS would upgrade the cluster under
/// the stack); one past standard support is allowed with a warning (it costs extended
/// support); one the table does not know is not checked.
fn check_version(s: &mut Stack, version: &str, today: k8s_openapi::jiff::civil::Date) {
    use eks_versions::Support;
    match eks_versions::support(version, today) {
        Support::Standard | Support::Unknown => {}
        Support::Extended { ended, until } => eprintln!(
            "WARNING: eks.version {version} left EKS standard support on {ended}: a cluster on it \
             pays for extended support (until {until}); the default is {}",
            eks_versions::DEFAULT
        ),
        Support::Ended { on } => s.invalid(format!(
            "eks.version {version} is past EKS extended support (ended {on}); use {} or \
             another version in stack/src/app/eks_versions.rs",
            eks_versions::DEFAULT
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::civil::date;

    #[test]
    fn a_version_past_extended_support_is_refused_naming_the_default() {
        let mut s = Stack::new("t");
        check_version(&mut s, "1.35", date(2026, 12, 7));
        assert!(s.validate().is_ok());
        check_version(&mut s, "1.30", date(2026, 12, 7));
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("eks.version 1.30 is past EKS extended support"),
            "{e}"
        );
        assert!(e.contains("use 1.35"), "{e}");
    }
}
