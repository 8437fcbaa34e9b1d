//! THE stack: this project's infrastructure, declared as Rust values, split by
//! concern: [`lambda`], [`network`], [`eks`], [`k8s`].
//!
//! ECR repositories for the server and Lambda images; IAM roles for the Lambda, the EKS
//! cluster and its nodes; the Lambda function with its log group, behind an API Gateway
//! HTTP API (`POST /predict`, `$default` stage); a VPC with two subnets in two zones;
//! the EKS cluster and a managed node group; and the model server on Kubernetes
//! (namespace, Deployment, Service, HPA, PDB), applied after the node group.

pub mod eks;
pub mod eks_versions;
pub mod k8s;
pub mod lambda;
pub mod network;

use crate::config::Config;
use crate::engine::Stack;
use crate::providers::aws::ecr;

/// What declaring the stack may require of the local disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Whether the artifacts `up` deploys must exist: the Lambda's (the zip, or the
    /// bootstrap for its image) and the server binary the server image is built from.
    /// `stack synth --k8s` prints Kubernetes objects only and needs none; `stack down`
    /// deletes what the state holds and needs none either.
    pub artifacts: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { artifacts: true }
    }
}

/// Declares the stack for `cfg`. Configuration problems are collected in the stack and
/// reported by [`Stack::validate`], before any API call.
/// The ARN of the AWS managed IAM policy `name` (`service-role/…` included) in
/// `region`'s partition.
fn managed_policy(region: &str, name: &str) -> String {
    let partition = crate::providers::aws::partition(region);
    format!("arn:{partition}:iam::aws:policy/{name}")
}

pub fn build(cfg: &Config) -> Stack {
    build_with(cfg, BuildOptions::default())
}

/// [`build`] with options.
pub fn build_with(cfg: &Config, opts: BuildOptions) -> Stack {
    let mut s = Stack::new(&cfg.stack);
    let p = &cfg.prefix;
    if p.is_empty()
        || !p
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        s.invalid(format!("prefix `{p}` must be non-empty [a-z0-9-]"));
    }
    if cfg.region.is_empty()
        || !cfg
            .region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        s.invalid(format!(
            "region `{}` is not a region name like us-east-1",
            cfg.region
        ));
    }

    // Container registries.
    let server_repo = s.add("server-repo", ecr::Repository::new(format!("{p}/server")));
    let lambda_repo = s.add("lambda-repo", ecr::Repository::new(format!("{p}/lambda")));

    let lambda = lambda::declare(&mut s, cfg, opts, &lambda_repo);
    let net = network::declare(&mut s, cfg);
    let eks = eks::declare(&mut s, cfg, net);
    let service = k8s::declare(&mut s, cfg, &server_repo, &eks.cluster, &eks.nodes, opts);

    s.export("api_url", &lambda.stage.output::<String>("invoke_url"));
    s.export("function_name", &lambda.function.output::<String>("name"));
    // The load balancer's URL once the cloud has provisioned it (`up` waits for it on
    // AWS); the local target serves its own front over the pods under the same name.
    s.export("service_url", &service.output::<String>("url"));
    s.export(
        "server_repository_url",
        &server_repo.output::<String>("url"),
    );
    s.export(
        "lambda_repository_url",
        &lambda_repo.output::<String>("url"),
    );
    s.export("cluster_name", &eks.cluster.output::<String>("name"));
    s.export(
        "cluster_endpoint",
        &eks.cluster.output::<String>("endpoint"),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps_of(s: &Stack, name: &str) -> Vec<String> {
        s.resources
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{name} declared"))
            .deps()
    }

    #[test]
    fn metrics_server_sits_between_the_node_group_and_the_hpa() {
        let s = build_with(&Config::default(), BuildOptions { artifacts: false });
        assert!(deps_of(&s, "eks-metrics-server").contains(&"eks-nodes".to_string()));
        assert!(deps_of(&s, "eks-metrics-server").contains(&"eks-cluster".to_string()));
        assert!(deps_of(&s, "k8s-hpa").contains(&"eks-metrics-server".to_string()));
        let addon = s.resources.iter().find(|d| d.name == "eks-metrics-server");
        assert_eq!(addon.unwrap().props["name"], "metrics-server");
    }

    #[test]
    fn missing_artifacts_are_an_error_unless_not_needed() {
        let mut cfg = Config::default();
        cfg.lambda.zip_path = "/nonexistent/sentiment.zip".into();
        assert!(build(&cfg).validate().is_err());
        let s = build_with(&cfg, BuildOptions { artifacts: false });
        assert!(s.validate().is_ok());
        cfg.lambda.package = "image".into();
        cfg.lambda.bootstrap = "/nonexistent/bootstrap".into();
        let err = build(&cfg).validate().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/bootstrap"), "{err}");
    }

    #[test]
    fn arns_and_principals_follow_the_region_s_partition() {
        let attached = |region: &str| {
            let cfg = Config {
                region: region.into(),
                ..Config::default()
            };
            let s = build_with(&cfg, BuildOptions { artifacts: false });
            let arn = |name: &str| s.get(name).unwrap().props["policy_arn"].clone();
            let node_role = &s.get("eks-node-role").unwrap().props;
            let principal =
                node_role["assume_role_policy"]["Statement"][0]["Principal"]["Service"].clone();
            (
                arn("lambda-role-basic"),
                arn("eks-node-role-policy-0"),
                principal,
            )
        };
        for (region, partition, ec2) in [
            ("us-east-1", "aws", "ec2.amazonaws.com"),
            ("cn-north-1", "aws-cn", "ec2.amazonaws.com.cn"),
            ("us-gov-west-1", "aws-us-gov", "ec2.amazonaws.com"),
        ] {
            let (lambda, node, principal) = attached(region);
            let policy = |name: &str| format!("arn:{partition}:iam::aws:policy/{name}");
            assert_eq!(lambda, policy("service-role/AWSLambdaBasicExecutionRole"));
            assert_eq!(node, policy("AmazonEKSWorkerNodePolicy"));
            assert_eq!(principal, ec2, "{region}");
        }
    }

    #[test]
    fn a_missing_server_binary_is_an_error_unless_an_image_is_named() {
        let mut cfg = Config::default();
        cfg.lambda.image_uri = Some("registry.example/sentiment-lambda:1".into());
        cfg.k8s.server_binary = "/nonexistent/sentiment-server".into();
        let err = build(&cfg).validate().unwrap_err().to_string();
        assert!(
            err.contains("k8s: the server image needs `/nonexistent/sentiment-server`"),
            "{err}"
        );
        let not_needed = BuildOptions { artifacts: false };
        assert!(build_with(&cfg, not_needed).validate().is_ok());
        cfg.k8s.image = Some("registry.example/sentiment-server:1".into());
        let s = build(&cfg);
        s.validate().unwrap();
        assert!(s.get("server-image").is_none(), "nothing to build");
        let deploy = &s.get("k8s-deployment").unwrap().props;
        let image = &deploy["spec"]["template"]["spec"]["containers"][0]["image"];
        assert_eq!(image, "registry.example/sentiment-server:1");
    }
}
