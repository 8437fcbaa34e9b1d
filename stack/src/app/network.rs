//! The network the EKS nodes live in: given subnets, or a VPC with two public subnets
//! in two zones, an internet gateway and a route table giving the nodes egress.

use crate::config::Config;
use crate::engine::{Handle, Input, Stack};
use crate::providers::aws::{AwsResult, Tags, ec2};

/// The subnets for the cluster and nodes, and the route table that gives them egress
/// (none for given subnets).
pub struct Network {
    /// Subnet ids (two zones).
    pub subnets: Vec<Input<String>>,
    /// The public route table, when this stack made the VPC.
    pub egress: Option<Handle<ec2::RouteTable>>,
}

/// Zone ids where EKS cannot place a cluster's network interfaces (EKS user guide,
/// "View Amazon EKS networking requirements for VPC and subnets":
/// <https://docs.aws.amazon.com/eks/latest/userguide/network-reqs.html>). Zone *names*
/// map to ids differently in each account, so `us-east-1a` may be `use1-az3` in yours.
const EKS_UNSUPPORTED_ZONE_IDS: &[&str] = &["use1-az3", "usw1-az2", "cac1-az3"];

/// Checks, before anything is made, that the subnets' zones exist in this account,
/// are available, and can hold an EKS cluster; the error names the zones that can.
pub async fn check_zones(ec2: &aws_sdk_ec2::Client, cfg: &Config) -> Result<(), String> {
    if cfg.network.subnet_ids.is_some() {
        return Ok(());
    }
    let r = ec2.describe_availability_zones().send().await;
    let r = r
        .aws("ec2:DescribeAvailabilityZones")
        .map_err(|e| e.to_string())?;
    let known = r.availability_zones();
    // Why a zone cannot hold the cluster's subnets, if it cannot.
    let unusable = |z: &aws_sdk_ec2::types::AvailabilityZone| {
        if EKS_UNSUPPORTED_ZONE_IDS.contains(&z.zone_id().unwrap_or_default()) {
            Some("a zone EKS does not support")
        } else if z.state().is_none_or(|s| s.as_str() != "available") {
            Some("not available")
        } else {
            None
        }
    };
    let mut problems = Vec::new();
    for zone in cfg.network.zones(&cfg.region) {
        match known.iter().find(|z| z.zone_name() == Some(zone.as_str())) {
            None => problems.push(format!("{zone} is not a zone of {}", cfg.region)),
            Some(z) => {
                if let Some(why) = unusable(z) {
                    let id = z.zone_id().unwrap_or("?");
                    problems.push(format!("{zone} is {id} in this account, {why}"));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&str> = known
        .iter()
        .filter(|z| unusable(z).is_none())
        .filter_map(|z| z.zone_name())
        .collect();
    names.sort_unstable();
    Err(format!(
        "network.availability_zones: {}; set two of {}",
        problems.join("; "),
        names.join(", ")
    ))
}

/// Declares the network for `cfg`.
pub fn declare(s: &mut Stack, cfg: &Config) -> Network {
    let mut egress = None;
    let subnets: Vec<Input<String>> = match &cfg.network.subnet_ids {
        Some(ids) => {
            if ids.len() < 2 {
                s.invalid("network.subnet_ids needs at least two subnets in two zones");
            }
            ids.iter().cloned().map(Input::Value).collect()
        }
        None => {
            let zones = cfg.network.zones(&cfg.region);
            if zones.len() != 2 || cfg.network.subnet_cidrs.len() != 2 || zones[0] == zones[1] {
                s.invalid(
                    "network needs exactly two subnet_cidrs and two distinct availability_zones",
                );
            }
            let vpc = s.add(
                "vpc",
                // EKS nodes register by DNS name: both attributes on (AWS's default
                // leaves hostnames off).
                ec2::Vpc {
                    cidr_block: cfg.network.vpc_cidr.clone(),
                    enable_dns_support: true,
                    enable_dns_hostnames: true,
                    tags: Default::default(),
                },
            );
            let subnets: Vec<Input<String>> = zones
                .iter()
                .zip(&cfg.network.subnet_cidrs)
                .zip(["subnet-a", "subnet-b"])
                .map(|((az, cidr), name)| {
                    let sn = s.add(
                        name,
                        ec2::Subnet {
                            vpc_id: vpc.output("id").into(),
                            cidr_block: cidr.clone(),
                            availability_zone: az.clone(),
                            map_public_ip_on_launch: true,
                            // Where the AWS load balancer controller and the in-tree
                            // cloud provider look for subnets for an internet-facing
                            // LoadBalancer Service (EKS "Subnet requirements").
                            tags: Tags::from([
                                ("kubernetes.io/role/elb".into(), "1".into()),
                                (
                                    format!("kubernetes.io/cluster/{}", cfg.prefix),
                                    "shared".into(),
                                ),
                            ]),
                        },
                    );
                    sn.output::<String>("id").into()
                })
                .collect();
            // Public subnets: nodes need egress to join the cluster and pull images.
            let igw = s.add(
                "internet-gateway",
                ec2::InternetGateway {
                    vpc_id: vpc.output("id").into(),
                    tags: Default::default(),
                },
            );
            let rt = s.add(
                "public-routes",
                ec2::RouteTable {
                    vpc_id: vpc.output("id").into(),
                    gateway_id: igw.output("id").into(),
                    subnet_ids: subnets.clone(),
                    tags: Default::default(),
                },
            );
            egress = Some(rt);
            subnets
        }
    };

    Network { subnets, egress }
}
