//! THE stack: this project's infrastructure, declared as Rust values.
//!
//! ECR repositories for the server and Lambda images; IAM roles for the Lambda, the EKS
//! cluster and its nodes; the Lambda function with its log group, behind an API Gateway
//! HTTP API (`POST /predict`, `$default` stage); a VPC with two subnets in two zones;
//! the EKS cluster and a managed node group; and the model server on Kubernetes
//! (namespace, Deployment, Service, HPA, PDB), applied after the node group.

use std::path::Path;

use crate::artifacts::image::ServerImage;
use crate::config::Config;
use std::collections::BTreeMap;

use crate::engine::{Handle, Input, Stack, UNKNOWN};
use crate::providers::aws::{apigw, ec2, ecr, eks, iam, lambda, logs, s3};
use crate::providers::k8s::{self, manifests};

const LAMBDA_BASIC: &str = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";
const EKS_CLUSTER: &str = "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy";
const EKS_NODE: [&str; 3] = [
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
];

/// What declaring the stack may require of the local disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Whether the Lambda artifacts (the zip, or the bootstrap for the image) must
    /// exist. `stack synth --k8s` prints Kubernetes objects only and needs none.
    pub lambda_artifacts: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            lambda_artifacts: true,
        }
    }
}

/// Declares the stack for `cfg`. Configuration problems are collected in the stack and
/// reported by [`Stack::validate`], before any API call.
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

    // Lambda: role, logs, function, HTTP API.
    let lambda_role = s.add(
        "lambda-role",
        iam::Role::for_service(format!("{p}-lambda-exec"), "lambda.amazonaws.com"),
    );
    s.add(
        "lambda-role-basic",
        iam::RolePolicyAttachment {
            role: lambda_role.output("name").into(),
            policy_arn: LAMBDA_BASIC.into(),
        },
    );
    let fn_name = format!("{p}-predict");
    let log_group = s.add(
        "lambda-logs",
        logs::LogGroup {
            name: format!("/aws/lambda/{fn_name}"),
            retention_days: cfg.log_retention_days,
            tags: Default::default(),
        },
    );
    let code = lambda_code(&mut s, cfg, opts, &lambda_repo);
    let mut f = lambda::Function::new(fn_name, lambda_role.output::<String>("arn"), code);
    f.memory_mb = cfg.lambda.memory_mb;
    f.timeout_s = cfg.lambda.timeout_s;
    f.architecture = cfg.lambda.architecture.clone();
    f.env = cfg.lambda.env.clone();
    let function = s.add("lambda-function", f);
    // The log group must exist first so Lambda does not create it without retention.
    s.depends_on(&function, &log_group);

    let http = s.add(
        "http-api",
        apigw::Api {
            name: format!("{p}-http"),
            protocol_type: "HTTP".into(),
            tags: Default::default(),
        },
    );
    let integration = s.add(
        "http-integration",
        apigw::Integration {
            api_id: http.output("id").into(),
            integration_type: "AWS_PROXY".into(),
            integration_uri: function.output("arn").into(),
            integration_method: "POST".into(),
            payload_format_version: "2.0".into(),
        },
    );
    s.add(
        "http-route-predict",
        apigw::Route {
            api_id: http.output("id").into(),
            route_key: "POST /predict".into(),
            target: integration.output("target").into(),
        },
    );
    let stage = s.add(
        "http-stage",
        apigw::Stage {
            api_id: http.output("id").into(),
            name: "$default".into(),
            auto_deploy: true,
            tags: Default::default(),
        },
    );
    // Source ARN: any stage, POST /predict (the execution ARN is account-qualified).
    let perm = lambda::Permission {
        function: function.output("name").into(),
        statement_id: "allow-apigateway-invoke".into(),
        action: "lambda:InvokeFunction".into(),
        principal: "apigateway.amazonaws.com".into(),
        source_arn: http.output("execution_arn").into(),
    };
    s.add("lambda-permission-apigw", perm);

    // Network: given subnets, or a VPC with two subnets in two zones.
    let mut egress = None;
    let subnets: Vec<Input<String>> = match &cfg.network.subnet_ids {
        Some(ids) => {
            if ids.len() < 2 {
                s.invalid("network.subnet_ids needs at least two subnets in two zones");
            }
            ids.iter().cloned().map(Input::Value).collect()
        }
        None => {
            let zones =
                cfg.network.availability_zones.clone().unwrap_or_else(|| {
                    vec![format!("{}a", cfg.region), format!("{}b", cfg.region)]
                });
            if zones.len() != 2 || cfg.network.subnet_cidrs.len() != 2 || zones[0] == zones[1] {
                s.invalid(
                    "network needs exactly two subnet_cidrs and two distinct availability_zones",
                );
            }
            let vpc = s.add(
                "vpc",
                ec2::Vpc {
                    cidr_block: cfg.network.vpc_cidr.clone(),
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
                            tags: Default::default(),
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

    // EKS.
    let cluster_role = s.add(
        "eks-cluster-role",
        iam::Role::for_service(format!("{p}-eks-cluster"), "eks.amazonaws.com"),
    );
    let cluster_attach = s.add(
        "eks-cluster-role-policy",
        iam::RolePolicyAttachment {
            role: cluster_role.output("name").into(),
            policy_arn: EKS_CLUSTER.into(),
        },
    );
    let node_role = s.add(
        "eks-node-role",
        iam::Role::for_service(format!("{p}-eks-node"), "ec2.amazonaws.com"),
    );
    let node_attach: Vec<_> = EKS_NODE
        .iter()
        .enumerate()
        .map(|(i, arn)| {
            s.add(
                &format!("eks-node-role-policy-{i}"),
                iam::RolePolicyAttachment {
                    role: node_role.output("name").into(),
                    policy_arn: (*arn).into(),
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

    // Kubernetes: the model server, after the node group (nothing can run before).
    let stack_name = cfg.stack.clone();
    let kc = &cfg.k8s;
    if kc.threads < 1 || kc.replicas < 1 || kc.min_replicas < 1 || kc.max_replicas < kc.min_replicas
    {
        s.invalid(
            "k8s: threads, replicas and min_replicas must be >= 1, max_replicas >= min_replicas",
        );
    }
    // The image: built from the release server binary and pushed to the server
    // repository when the binary exists; otherwise the configured image reference.
    let image: Input<String> = if Path::new(&kc.server_binary).is_file() {
        match ServerImage::new(
            server_repo.output("url").into(),
            &kc.server_binary,
            u16::try_from(kc.port).unwrap_or(8080),
            kc.model_env.clone(),
        ) {
            Ok(img) => {
                let img = img.on_base(kc.base_image.clone());
                let img = s.add("server-image", img);
                img.output::<String>("uri").into()
            }
            Err(e) => {
                s.invalid(e);
                Input::Value(kc.image.clone())
            }
        }
    } else {
        Input::Value(kc.image.clone())
    };
    let ns = s.add(
        "k8s-namespace",
        k8s::Namespace(manifests::namespace(&stack_name, kc)),
    );
    s.depends_on(&ns, &nodes);
    let deploy = s.add(
        "k8s-deployment",
        k8s::Deployment(manifests::deployment(&stack_name, kc, &image)),
    );
    s.depends_on(&deploy, &ns);
    let svc = s.add(
        "k8s-service",
        k8s::Service(manifests::service(&stack_name, kc)),
    );
    s.depends_on(&svc, &ns);
    // The HPA's CPU metric comes from metrics-server: an EKS add-on, after the nodes
    // (its pods need somewhere to run), before the HPA (which references it).
    let metrics = s.add(
        "eks-metrics-server",
        eks::Addon {
            cluster: cluster.output("name").into(),
            name: "metrics-server".into(),
            version: cfg.eks.metrics_server_version.clone(),
            tags: Default::default(),
        },
    );
    s.depends_on(&metrics, &nodes);
    let hpa = s.add(
        "k8s-hpa",
        k8s::HorizontalPodAutoscaler(manifests::with_metrics_source(
            manifests::hpa(&stack_name, kc),
            &metrics.output::<String>("name").into(),
        )),
    );
    s.depends_on(&hpa, &deploy);
    let pdb = s.add(
        "k8s-pdb",
        k8s::PodDisruptionBudget(manifests::pdb(&stack_name, kc)),
    );
    s.depends_on(&pdb, &ns);

    s.export("api_url", &stage.output::<String>("invoke_url"));
    s.export("function_name", &function.output::<String>("name"));
    s.export(
        "server_repository_url",
        &server_repo.output::<String>("url"),
    );
    s.export(
        "lambda_repository_url",
        &lambda_repo.output::<String>("url"),
    );
    s.export("cluster_name", &cluster.output::<String>("name"));
    s.export("cluster_endpoint", &cluster.output::<String>("endpoint"));
    s
}

/// The Lambda function's code: an existing image, an image built from `bootstrap`, or
/// the zip, directly or (over 50 MB) through a content-addressed S3 object.
fn lambda_code(
    s: &mut Stack,
    cfg: &Config,
    opts: BuildOptions,
    repo: &Handle<ecr::Repository>,
) -> lambda::Code {
    let lc = &cfg.lambda;
    if let Some(uri) = &lc.image_uri {
        return lambda::Code::Image {
            uri: uri.clone().into(),
        };
    }
    match lc.package.as_str() {
        "image" => {
            let img = ServerImage::lambda(
                repo.output("url").into(),
                &lc.bootstrap,
                lc.model_dir.as_deref(),
                BTreeMap::new(),
            );
            match img {
                Ok(img) => {
                    let img = s.add("lambda-image", img.on_base(lc.base_image.clone()));
                    lambda::Code::Image {
                        uri: img.output::<String>("uri").into(),
                    }
                }
                Err(e) => {
                    if opts.lambda_artifacts {
                        s.invalid(format!(
                            "{e} (build it first with `cargo lambda build --release -p sentiment-lambda`, or set lambda.bootstrap)"
                        ));
                    }
                    lambda::Code::Image {
                        uri: UNKNOWN.to_string().into(),
                    }
                }
            }
        }
        "zip" => match lambda::ZipFacts::of(&lc.zip_path) {
            Ok(z) if z.needs_s3() => {
                let p = &cfg.prefix;
                let bucket = s.add(
                    "lambda-artifacts",
                    s3::Bucket {
                        name: lc
                            .s3_bucket
                            .clone()
                            .unwrap_or_else(|| format!("{p}-lambda-artifacts")),
                        account_suffix: true,
                        tags: Default::default(),
                    },
                );
                let object = s.add(
                    "lambda-zip",
                    s3::Object {
                        bucket: bucket.output("name").into(),
                        key: z.s3_key(),
                        source: lc.zip_path.clone(),
                        sha256: z.sha256_b64.clone(),
                    },
                );
                lambda::Code::S3 {
                    bucket: object.output("bucket").into(),
                    key: object.output("key").into(),
                    sha256: z.sha256_b64,
                }
            }
            Ok(z) => lambda::Code::Zip {
                path: lc.zip_path.clone(),
                sha256: z.sha256_b64,
            },
            Err(e) => {
                if opts.lambda_artifacts {
                    s.invalid(format!(
                        "{e} (build it first, or set lambda.zip_path / lambda.image_uri in the config)"
                    ));
                }
                lambda::Code::Zip {
                    path: lc.zip_path.clone(),
                    sha256: String::new(),
                }
            }
        },
        other => {
            s.invalid(format!("lambda.package `{other}` must be zip or image"));
            lambda::Code::Zip {
                path: lc.zip_path.clone(),
                sha256: String::new(),
            }
        }
    }
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
        let s = build_with(
            &Config::default(),
            BuildOptions {
                lambda_artifacts: false,
            },
        );
        assert!(deps_of(&s, "eks-metrics-server").contains(&"eks-nodes".to_string()));
        assert!(deps_of(&s, "eks-metrics-server").contains(&"eks-cluster".to_string()));
        assert!(deps_of(&s, "k8s-hpa").contains(&"eks-metrics-server".to_string()));
        let addon = s.resources.iter().find(|d| d.name == "eks-metrics-server");
        assert_eq!(addon.unwrap().props["name"], "metrics-server");
    }

    #[test]
    fn missing_lambda_artifacts_are_an_error_unless_not_needed() {
        let mut cfg = Config::default();
        cfg.lambda.zip_path = "/nonexistent/sentiment.zip".into();
        assert!(build(&cfg).validate().is_err());
        let s = build_with(
            &cfg,
            BuildOptions {
                lambda_artifacts: false,
            },
        );
        assert!(s.validate().is_ok());
        cfg.lambda.package = "image".into();
        cfg.lambda.bootstrap = "/nonexistent/bootstrap".into();
        let err = build(&cfg).validate().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/bootstrap"), "{err}");
    }
}
