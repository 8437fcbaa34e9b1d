//! AWS's and Kubernetes' documented rules where moto is lax, checked against what a
//! deployment sent: the AWS requests (the [request log](RequestLog), `--request-log`)
//! and the Kubernetes objects applied. moto takes requests that AWS refuses, or that
//! AWS takes and then fails on (a permission API Gateway can never use, nodes that
//! cannot register), so `make test` deploys against moto with the log on and checks
//! every request here (`tests/aws_rules.rs`). Each rule names the documentation it
//! comes from.
//!
//! [RequestLog]: crate::providers::aws::request_log::RequestLog

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::jiff::civil::Date;
use serde_json::Value;
use std::fmt;

use crate::app::eks_versions::{self, Support};
use crate::local::kubelet::{Nodes, requests};
use crate::providers::aws::lambda::DIRECT_UPLOAD_MAX;
use crate::providers::aws::request_log::LoggedRequest;

/// What a deployment sent, and the day to judge version support on.
pub struct Evidence<'a> {
    /// Every AWS request, in order.
    pub requests: &'a [LoggedRequest],
    /// The Kubernetes objects applied (manifests as JSON).
    pub k8s: &'a [Value],
    /// Today, for the Kubernetes version's support window.
    pub today: Date,
}

impl Evidence<'_> {
    fn sent<'a>(
        &'a self,
        service: &'a str,
        operation: &'a str,
    ) -> impl Iterator<Item = &'a LoggedRequest> + 'a {
        self.requests
            .iter()
            .filter(move |r| r.service == service && r.operation == operation)
    }
}

/// One documented rule.
pub struct Rule {
    /// A short name, e.g. `lambda-permission-source-arn`.
    pub id: &'static str,
    /// Where AWS or Kubernetes documents it.
    pub source: &'static str,
    check: fn(&Evidence) -> Vec<String>,
}

/// A request or object that breaks a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The rule's id.
    pub rule: &'static str,
    /// Its documentation.
    pub source: &'static str,
    /// What is wrong, naming the request or object.
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (see {})", self.rule, self.problem, self.source)
    }
}

/// Every rule.
pub const RULES: &[Rule] = &[
    Rule {
        id: "lambda-permission-source-arn",
        source: "https://docs.aws.amazon.com/apigateway/latest/developerguide/arn-format-reference.html",
        check: permission_source_arn,
    },
    Rule {
        id: "lambda-create-function-fields",
        source: "https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html",
        check: create_function_fields,
    },
    Rule {
        id: "lambda-zip-upload-size",
        source: "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html",
        check: zip_upload_size,
    },
    Rule {
        id: "apigw-integration-timeout",
        source: "https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html",
        check: integration_timeout,
    },
    Rule {
        id: "eks-vpc-dns",
        source: "https://docs.aws.amazon.com/eks/latest/userguide/network-reqs.html",
        check: vpc_dns,
    },
    Rule {
        id: "eks-subnet-tags",
        source: "https://docs.aws.amazon.com/eks/latest/userguide/network-load-balancing.html",
        check: subnet_tags,
    },
    Rule {
        id: "eks-version-supported",
        source: "https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html",
        check: version_supported,
    },
    Rule {
        id: "pod-requests-fit-node",
        source: "https://kubernetes.io/docs/tasks/administer-cluster/reserve-compute-resources/#node-allocatable",
        check: pod_requests_fit_node,
    },
];

/// Every violation of every rule.
pub fn check(e: &Evidence) -> Vec<Violation> {
    RULES
        .iter()
        .flat_map(|r| {
            (r.check)(e).into_iter().map(|problem| Violation {
                rule: r.id,
                source: r.source,
                problem,
            })
        })
        .collect()
}

/// API Gateway invokes a function only when the permission's `SourceArn` matches
/// `arn:<partition>:execute-api:<region>:<account>:<api-id>/<stage>/<method>/<path>`;
/// a bare API ARN matches no request, so every call through the API gets a 500.
fn permission_source_arn(e: &Evidence) -> Vec<String> {
    e.sent("Lambda", "AddPermission")
        .filter(|r| r.param("Principal") == Some("apigateway.amazonaws.com"))
        .filter_map(|r| {
            let statement = r.param("StatementId").unwrap_or("?");
            let Some(arn) = r.param("SourceArn") else {
                return Some(format!(
                    "permission `{statement}` lets API Gateway invoke from any account's API: \
                     it has no SourceArn"
                ));
            };
            let parts: Vec<&str> = arn.splitn(6, ':').collect();
            let resource = parts.get(5).copied().unwrap_or_default();
            // api-id, stage, method (a trailing `*` also matches the path).
            let ok = parts.len() == 6
                && parts[0] == "arn"
                && parts[2] == "execute-api"
                && resource.split('/').count() >= 3;
            (!ok).then(|| {
                format!(
                    "permission `{statement}`: SourceArn `{arn}` is not an execute-api ARN of \
                     the form <api-id>/<stage>/<method>/<path>; API Gateway's calls would not match it"
                )
            })
        })
        .collect()
}

/// A .zip function needs `Runtime` and `Handler` (whether the code is inline or in
/// S3) and its code as `ZipFile` or `S3Bucket` + `S3Key`; an image function needs
/// `Code.ImageUri` and refuses `Runtime` and `Handler`.
fn create_function_fields(e: &Evidence) -> Vec<String> {
    let mut problems = Vec::new();
    for r in e.sent("Lambda", "CreateFunction") {
        let name = r.param("FunctionName").unwrap_or("?");
        let code = &r.params["Code"];
        let has = |k: &str| !r.params[k].is_null();
        let code_has = |k: &str| !code[k].is_null();
        let mut missing = |what: &str| problems.push(format!("function `{name}`: {what}"));
        match r.param("PackageType").unwrap_or("Zip") {
            "Image" => {
                if !code_has("ImageUri") {
                    missing("an Image package needs Code.ImageUri");
                }
                if has("Runtime") || has("Handler") {
                    missing("an Image package must not set Runtime or Handler");
                }
            }
            _ => {
                for field in ["Runtime", "Handler"] {
                    if !has(field) {
                        missing(&format!("a .zip package needs {field}, inline or from S3"));
                    }
                }
                let in_s3 = code_has("S3Bucket") && code_has("S3Key");
                if !code_has("ZipFile") && !in_s3 {
                    missing("a .zip package needs Code.ZipFile or Code.S3Bucket + Code.S3Key");
                }
            }
        }
    }
    problems
}

/// A .zip sent in the request itself is at most 50 MB; larger ones go through S3.
fn zip_upload_size(e: &Evidence) -> Vec<String> {
    let inline = e
        .sent("Lambda", "CreateFunction")
        .map(|r| (r, &r.params["Code"]["ZipFile"]))
        .chain(
            e.sent("Lambda", "UpdateFunctionCode")
                .map(|r| (r, &r.params["ZipFile"])),
        );
    inline
        .filter_map(|(r, zip)| {
            let base64_chars = match zip {
                Value::String(s) => s.len(),
                v => v["omitted_chars"].as_u64()? as usize,
            };
            let bytes = base64_chars as u64 / 4 * 3;
            (bytes > DIRECT_UPLOAD_MAX).then(|| {
                format!(
                    "{} `{}` sends a {} MB zip in the request; over 50 MB it must go through S3",
                    r.operation,
                    r.param("FunctionName").unwrap_or(&r.path),
                    bytes >> 20
                )
            })
        })
        .collect()
}

/// An HTTP API integration times out after 30 s at most.
fn integration_timeout(e: &Evidence) -> Vec<String> {
    let sent = e.sent("ApiGatewayV2", "CreateIntegration");
    sent.chain(e.sent("ApiGatewayV2", "UpdateIntegration"))
        .filter_map(|r| {
            let ms = r.params["timeoutInMillis"].as_u64()?;
            (!(50..=30_000).contains(&ms)).then(|| {
                format!(
                    "{} sets timeoutInMillis {ms}; an HTTP API allows 50 to 30000",
                    r.operation
                )
            })
        })
        .collect()
}

fn creates_a_cluster(e: &Evidence) -> bool {
    e.sent("EKS", "CreateCluster").next().is_some()
}

/// Nodes register only in a VPC with DNS hostnames and DNS resolution; a new VPC has
/// resolution on and hostnames off, so the VPC of the cluster's subnets must have
/// hostnames turned on.
fn vpc_dns(e: &Evidence) -> Vec<String> {
    if !creates_a_cluster(e) {
        return Vec::new();
    }
    let set = |vpc: &str, attribute: &str, value: &str| {
        e.sent("EC2", "ModifyVpcAttribute").any(|r| {
            r.param("VpcId") == Some(vpc) && r.param(&format!("{attribute}.Value")) == Some(value)
        })
    };
    let mut vpcs: Vec<&str> = e
        .sent("EC2", "CreateSubnet")
        .filter_map(|r| r.param("VpcId"))
        .collect();
    vpcs.sort_unstable();
    vpcs.dedup();
    vpcs.into_iter()
        .filter_map(|vpc| {
            let hostnames = set(vpc, "EnableDnsHostnames", "true");
            let resolution_off = set(vpc, "EnableDnsSupport", "false");
            (!hostnames || resolution_off).then(|| {
                format!(
                    "VPC `{vpc}` of the cluster's subnets needs DNS hostnames and DNS resolution \
                     on, or nodes cannot register (hostnames turned on: {hostnames}, resolution \
                     turned off: {resolution_off})"
                )
            })
        })
        .collect()
}

/// The tags an EC2 create request gives its resource (`TagSpecification.N.Tag.M`).
fn ec2_tags(r: &LoggedRequest) -> Vec<(&str, &str)> {
    let Some(form) = r.params.as_object() else {
        return Vec::new();
    };
    form.iter()
        .filter(|(k, _)| k.starts_with("TagSpecification.") && k.ends_with(".Key"))
        .filter_map(|(k, v)| {
            let value_key = format!("{}.Value", k.trim_end_matches(".Key"));
            Some((v.as_str()?, form.get(&value_key)?.as_str()?))
        })
        .collect()
}

/// A LoadBalancer Service finds its subnets by `kubernetes.io/role/elb` (public) or
/// `kubernetes.io/role/internal-elb` (private) = `1`; a cluster tag, where set, names
/// the cluster and is `shared` or `owned`.
fn subnet_tags(e: &Evidence) -> Vec<String> {
    let clusters: Vec<&str> = e
        .sent("EKS", "CreateCluster")
        .filter_map(|r| r.params["name"].as_str())
        .collect();
    if clusters.is_empty() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for r in e.sent("EC2", "CreateSubnet") {
        let cidr = r.param("CidrBlock").unwrap_or("?");
        let tags = ec2_tags(r);
        let role = tags.iter().any(|&(k, v)| {
            matches!(
                k,
                "kubernetes.io/role/elb" | "kubernetes.io/role/internal-elb"
            ) && v == "1"
        });
        if !role {
            problems.push(format!(
                "subnet {cidr} has no `kubernetes.io/role/elb` (or `internal-elb`) = `1` tag: a \
                 LoadBalancer Service would find no subnet for its load balancer"
            ));
        }
        for (k, v) in tags {
            let Some(cluster) = k.strip_prefix("kubernetes.io/cluster/") else {
                continue;
            };
            if !clusters.contains(&cluster) || !matches!(v, "shared" | "owned") {
                problems.push(format!(
                    "subnet {cidr}: tag `{k}` = `{v}` should name a cluster this stack creates \
                     ({}) with `shared` or `owned`",
                    clusters.join(", ")
                ));
            }
        }
    }
    problems
}

/// A cluster's Kubernetes version is in EKS's standard support (extended support costs
/// extra per cluster hour; past it EKS upgrades the cluster itself).
fn version_supported(e: &Evidence) -> Vec<String> {
    e.sent("EKS", "CreateCluster")
        .chain(e.sent("EKS", "UpdateClusterVersion"))
        .filter_map(|r| {
            let version = r.params["version"].as_str()?;
            let why = match eks_versions::support(version, e.today) {
                Support::Standard => return None,
                Support::Extended { ended, until } => format!(
                    "left standard support on {ended} (extended support, at extra cost, until {until})"
                ),
                Support::Ended { on } => format!("is out of EKS support since {on}"),
                Support::Unknown => "is not in the dated table (app/eks_versions.rs)".to_string(),
            };
            Some(format!("{} asks for Kubernetes {version}, which {why}", r.operation))
        })
        .collect()
}

/// A pod is scheduled only on a node whose allocatable (capacity less what the EKS AMI
/// reserves) holds its requests: a pod requesting more stays Pending forever.
fn pod_requests_fit_node(e: &Evidence) -> Vec<String> {
    let types: Vec<&str> = e
        .sent("EKS", "CreateNodegroup")
        .flat_map(|r| r.params["instanceTypes"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let mut problems = Vec::new();
    for d in e.k8s.iter().filter(|o| o["kind"] == "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap_or("?");
        let containers = &d["spec"]["template"]["spec"]["containers"];
        let Ok(containers) = serde_json::from_value::<Vec<Container>>(containers.clone()) else {
            problems.push(format!("Deployment `{name}` has no readable containers"));
            continue;
        };
        let (cpu_m, memory) = containers
            .iter()
            .map(requests)
            .fold((0, 0), |(c, m), (rc, rm)| (c + rc, m + rm));
        for t in &types {
            let Some(node) = Nodes::of(t, 1) else {
                continue;
            };
            if cpu_m > node.cpu_m || memory > node.memory {
                problems.push(format!(
                    "Deployment `{name}`'s pods request {cpu_m}m CPU and {} MiB; a {t} node has \
                     {}m and {} MiB allocatable, so they would stay Pending",
                    memory >> 20,
                    node.cpu_m,
                    node.memory >> 20
                ));
            }
        }
    }
    problems
}

/// The IAM policy the deploying principal needs (`stack/aws/deployer-policy.json`):
/// every action `stack up`, `diff`, `refresh` and `down` take, plus those the SDK does
/// not show (the ECR registry's push, `iam:PassRole`, EKS's service-linked roles).
/// The lifecycle test checks each logged request against it.
pub const DEPLOYER_POLICY: &str = include_str!("../aws/deployer-policy.json");

/// The IAM action a request needs: mostly `<prefix>:<operation>`; an HTTP API call is
/// authorized by its method (`apigateway:POST`), and S3's `Head*` and listings by the
/// actions AWS documents for them.
pub fn iam_action(r: &LoggedRequest) -> String {
    let prefix = match r.service.as_str() {
        "ApiGatewayV2" => return format!("apigateway:{}", r.method),
        "CloudWatch Logs" => "logs",
        "CloudWatch" => "cloudwatch",
        other => {
            return format!(
                "{}:{}",
                other.to_lowercase(),
                s3_action(other, &r.operation)
            );
        }
    };
    format!("{prefix}:{}", r.operation)
}

fn s3_action<'a>(service: &str, operation: &'a str) -> &'a str {
    match (service, operation) {
        ("S3", "HeadObject") => "GetObject",
        ("S3", "HeadBucket" | "ListObjectsV2" | "ListObjects") => "ListBucket",
        ("S3", "DeleteBucketTagging") => "PutBucketTagging",
        _ => operation,
    }
}

/// The IAM actions `requests` need that [`DEPLOYER_POLICY`] does not allow, sorted,
/// each once: empty when a principal with only that policy can send them all.
pub fn denied_by_deployer_policy(requests: &[LoggedRequest]) -> Vec<String> {
    let policy: Value =
        serde_json::from_str(DEPLOYER_POLICY).expect("deployer-policy.json is JSON (tested)");
    let mut denied: Vec<String> = requests
        .iter()
        .map(iam_action)
        .filter(|a| !policy_allows(&policy, a))
        .collect();
    denied.sort();
    denied.dedup();
    denied
}

/// Whether an IAM policy document allows `action` (on some resource): an `Allow`
/// statement naming it, or a `*` pattern covering it.
pub fn policy_allows(policy: &Value, action: &str) -> bool {
    let matches = |pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern.eq_ignore_ascii_case(action),
    };
    let statements = policy["Statement"].as_array().into_iter().flatten();
    statements
        .filter(|s| s["Effect"] == "Allow")
        .any(|s| match &s["Action"] {
            Value::String(a) => matches(a),
            Value::Array(a) => a.iter().filter_map(Value::as_str).any(matches),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::civil::date;
    use serde_json::json;

    fn req(service: &str, operation: &str, params: Value) -> LoggedRequest {
        LoggedRequest {
            service: service.into(),
            operation: operation.into(),
            method: "POST".into(),
            path: "/".into(),
            params,
        }
    }

    fn create_function(params: Value) -> LoggedRequest {
        req("Lambda", "CreateFunction", params)
    }

    fn violations(requests: &[LoggedRequest], k8s: &[Value]) -> Vec<(&'static str, String)> {
        let e = Evidence {
            requests,
            k8s,
            today: date(2026, 12, 7),
        };
        check(&e).into_iter().map(|v| (v.rule, v.problem)).collect()
    }

    fn rules_broken(requests: &[LoggedRequest], k8s: &[Value]) -> Vec<&'static str> {
        violations(requests, k8s).into_iter().map(|v| v.0).collect()
    }

    fn permission(source_arn: &str) -> LoggedRequest {
        req(
            "Lambda",
            "AddPermission",
            json!({"StatementId": "apigw", "Principal": "apigateway.amazonaws.com", "SourceArn": source_arn}),
        )
    }

    #[test]
    fn a_bare_execute_api_arn_is_refused_and_stage_method_wildcards_pass() {
        // The shape before issue 19's fix: the API's own ARN.
        let bare = permission("arn:aws:execute-api:us-east-1:123456789012:abc123");
        assert_eq!(rules_broken(&[bare], &[]), ["lambda-permission-source-arn"]);
        let ok = permission("arn:aws:execute-api:us-east-1:123456789012:abc123/*/*");
        let route =
            permission("arn:aws:execute-api:us-east-1:123456789012:abc123/$default/POST/predict");
        assert!(rules_broken(&[ok, route], &[]).is_empty());
    }

    #[test]
    fn a_zip_function_from_s3_without_runtime_and_handler_is_refused() {
        // The shape before issue 19's fix: S3 code, no runtime, no handler.
        let from_s3 =
            create_function(json!({"FunctionName": "f", "Code": {"S3Bucket": "b", "S3Key": "k"}}));
        let v = violations(&[from_s3], &[]);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].1.contains("needs Runtime"), "{v:?}");
        assert!(v[1].1.contains("needs Handler"), "{v:?}");
        let ok = create_function(
            json!({"FunctionName": "f", "Runtime": "provided.al2023", "Handler": "bootstrap",
                   "Code": {"S3Bucket": "b", "S3Key": "k"}}),
        );
        assert!(rules_broken(&[ok], &[]).is_empty());
    }

    #[test]
    fn an_image_function_takes_an_image_uri_and_no_runtime() {
        let image = create_function(
            json!({"FunctionName": "f", "PackageType": "Image", "Runtime": "provided.al2023",
                   "Code": {"ZipFile": "UEs="}}),
        );
        let v = violations(&[image], &[]);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].1.contains("Code.ImageUri"));
        assert!(v[1].1.contains("must not set Runtime"));
    }

    #[test]
    fn an_inline_zip_over_50_mb_is_refused() {
        let big = create_function(
            json!({"FunctionName": "f", "Runtime": "provided.al2023", "Handler": "bootstrap",
                   "Code": {"ZipFile": {"omitted_chars": 80_000_000}}}),
        );
        let v = violations(&[big], &[]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].0, "lambda-zip-upload-size");
        assert!(v[0].1.contains("57 MB zip"), "{v:?}");
    }

    #[test]
    fn an_integration_timeout_over_30_s_is_refused() {
        let r = req(
            "ApiGatewayV2",
            "CreateIntegration",
            json!({"timeoutInMillis": 60_000}),
        );
        assert_eq!(rules_broken(&[r], &[]), ["apigw-integration-timeout"]);
    }

    fn cluster(version: &str) -> LoggedRequest {
        req(
            "EKS",
            "CreateCluster",
            json!({"name": "c", "version": version}),
        )
    }

    fn subnet(tags: &[(&str, &str)]) -> LoggedRequest {
        let mut form =
            json!({"Action": "CreateSubnet", "VpcId": "vpc-1", "CidrBlock": "10.0.0.0/24"});
        for (i, (k, v)) in tags.iter().enumerate() {
            form[format!("TagSpecification.1.Tag.{}.Key", i + 1)] = json!(k);
            form[format!("TagSpecification.1.Tag.{}.Value", i + 1)] = json!(v);
        }
        req("EC2", "CreateSubnet", form)
    }

    fn dns(attribute: &str, on: bool) -> LoggedRequest {
        let mut form = json!({"VpcId": "vpc-1"});
        form[format!("{attribute}.Value")] = json!(on.to_string());
        req("EC2", "ModifyVpcAttribute", form)
    }

    const ELB: (&str, &str) = ("kubernetes.io/role/elb", "1");

    #[test]
    fn a_cluster_vpc_without_dns_hostnames_is_refused() {
        // The shape before issue 19's fix: a VPC created without DNS hostnames.
        let v = rules_broken(&[cluster("1.35"), subnet(&[ELB])], &[]);
        assert_eq!(v, ["eks-vpc-dns"]);
        let on = [
            cluster("1.35"),
            subnet(&[ELB]),
            dns("EnableDnsSupport", true),
            dns("EnableDnsHostnames", true),
        ];
        assert!(rules_broken(&on, &[]).is_empty());
        let off = [
            cluster("1.35"),
            subnet(&[ELB]),
            dns("EnableDnsHostnames", true),
            dns("EnableDnsSupport", false),
        ];
        assert_eq!(rules_broken(&off, &[]), ["eks-vpc-dns"]);
        // No cluster, no rule.
        assert!(rules_broken(&[subnet(&[])], &[]).is_empty());
    }

    #[test]
    fn cluster_subnets_need_the_load_balancer_role_tag() {
        let hostnames = dns("EnableDnsHostnames", true);
        // The shape before issue 19's fix: untagged subnets.
        let untagged = [
            cluster("1.35"),
            subnet(&[("stack", "s")]),
            hostnames.clone(),
        ];
        assert_eq!(rules_broken(&untagged, &[]), ["eks-subnet-tags"]);
        let wrong_cluster = [
            cluster("1.35"),
            subnet(&[ELB, ("kubernetes.io/cluster/other", "shared")]),
            hostnames.clone(),
        ];
        let v = violations(&wrong_cluster, &[]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].1.contains("kubernetes.io/cluster/other"), "{v:?}");
        let ok = [
            cluster("1.35"),
            subnet(&[ELB, ("kubernetes.io/cluster/c", "shared")]),
            hostnames,
        ];
        assert!(rules_broken(&ok, &[]).is_empty());
    }

    #[test]
    fn a_version_past_standard_support_is_refused() {
        // The default before issue 19's fix: past extended support by now.
        let v = violations(&[cluster("1.31")], &[]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].0, "eks-version-supported");
        assert!(
            v[0].1.contains("out of EKS support since 2026-11-26"),
            "{v:?}"
        );
        let v = violations(&[cluster("1.32")], &[]);
        assert!(
            v[0].1.contains("left standard support on 2026-03-23"),
            "{v:?}"
        );
        assert_eq!(
            rules_broken(&[cluster("1.9")], &[]),
            ["eks-version-supported"]
        );
        assert!(rules_broken(&[cluster(eks_versions::DEFAULT)], &[]).is_empty());
    }

    #[test]
    fn requests_map_to_the_iam_actions_the_policy_grants() {
        let policy: Value = serde_json::from_str(DEPLOYER_POLICY).unwrap();
        let mut get = req("ApiGatewayV2", "GetApis", json!({}));
        get.method = "GET".into();
        assert_eq!(iam_action(&get), "apigateway:GET");
        let head = req("S3", "HeadObject", json!({}));
        assert_eq!(iam_action(&head), "s3:GetObject");
        let vpcs = req("EC2", "DescribeVpcs", json!({}));
        assert_eq!(iam_action(&vpcs), "ec2:DescribeVpcs");
        let logs = req("CloudWatch Logs", "PutRetentionPolicy", json!({}));
        assert_eq!(iam_action(&logs), "logs:PutRetentionPolicy");
        for granted in [
            "apigateway:GET",
            "s3:GetObject",
            "ec2:DescribeVpcs",
            "iam:PassRole",
        ] {
            assert!(policy_allows(&policy, granted), "{granted}");
        }
        assert!(!policy_allows(&policy, "ec2:RunInstances"));
        assert!(!policy_allows(&policy, "iam:CreateUser"));
    }

    fn deployment(cpu: &str) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "server"}, "spec": {"template": {"spec": {
            "containers": [{"name": "s", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}}}})
    }

    #[test]
    fn pods_requesting_more_than_a_node_holds_are_refused() {
        let nodes = req(
            "EKS",
            "CreateNodegroup",
            json!({"instanceTypes": ["t3.large"]}),
        );
        // The shape before issue 19's fix: 2 CPUs (the thread count) on a t3.large.
        let v = violations(std::slice::from_ref(&nodes), &[deployment("2")]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].0, "pod-requests-fit-node");
        assert!(
            v[0].1.contains("2000m CPU") && v[0].1.contains("1930m"),
            "{v:?}"
        );
        assert!(rules_broken(&[nodes], &[deployment("1")]).is_empty());
    }
}
