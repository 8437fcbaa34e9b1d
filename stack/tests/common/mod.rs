//! Test harness: moto (from `test-support`), a small valid Lambda zip, and
//! a runner for the `stack` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use stack::providers::aws::request_log::{LoggedRequest, RequestLog};

/// moto_server on a free loopback port (the workspace's one launcher), stopped on drop.
pub fn moto() -> test_support::Moto {
    test_support::Moto::start()
}

/// A project for stack `stack` against a moto server of its own, which stops when the
/// returned `Moto` drops: hold it for as long as the test uses the project.
pub fn project_on_moto(stack: &str) -> (test_support::Moto, Project) {
    let m = moto();
    let p = Project::new(&m.url, stack);
    (m, p)
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Writes a valid zip (one stored file `bootstrap`) with the given content.
pub fn write_zip(path: &Path, content: &[u8]) {
    let name = b"bootstrap";
    let crc = crc32(content);
    let size = content.len() as u32;
    let mut z = Vec::new();
    // Local file header.
    z.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    z.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method=stored, time, date
    z.extend_from_slice(&crc.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z.extend_from_slice(name);
    z.extend_from_slice(content);
    let cd_offset = z.len() as u32;
    // Central directory.
    z.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    z.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // made by (unix), needed, flags, method, time, date
    z.extend_from_slice(&crc.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // extra, comment, disk, internal attrs
    z.extend_from_slice(&(0o100_755u32 << 16).to_le_bytes()); // external attrs: executable
    z.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    z.extend_from_slice(name);
    let cd_size = z.len() as u32 - cd_offset;
    // End of central directory.
    z.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    z.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    z.extend_from_slice(&cd_size.to_le_bytes());
    z.extend_from_slice(&cd_offset.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    std::fs::write(path, z).expect("write zip");
}

/// Where each project's commands log their AWS requests.
const REQUEST_LOG: &str = "requests.jsonl";

/// A working directory with a config, a zip and a state dir, against one endpoint.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Project {
    pub fn new(endpoint: &str, stack: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        write_zip(
            &dir.path().join("bootstrap.zip"),
            b"#!/bin/sh\necho hello\n",
        );
        let p = Project {
            dir,
            endpoint: endpoint.into(),
        };
        p.config(stack, |_| {});
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `stack.json` for stack `stack`, edited by `f`.
    pub fn config(&self, stack: &str, f: impl FnOnce(&mut serde_json::Value)) {
        let mut v = serde_json::json!({
            "stack": stack,
            "prefix": stack,
            "region": "us-east-1",
            "lambda": { "zip_path": self.path("bootstrap.zip").display().to_string(), "memory_mb": 1024 },
            "eks": { "instance_type": "t3.large", "min_size": 1, "desired_size": 2, "max_size": 3 },
            // One CPU per pod: it fits a t3.large's 1930m allocatable. An image by
            // reference: the tests build no server binary.
            "k8s": { "threads": 1, "image": "sentiment-server:test" }
        });
        f(&mut v);
        std::fs::write(
            self.path("stack.json"),
            serde_json::to_vec_pretty(&v).unwrap(),
        )
        .unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stack"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("STACK_REQUEST_LOG", self.path(REQUEST_LOG))
            .env_remove("STACK_CONFIG")
            .env_remove("STACK_TARGET")
            .env_remove("STACK_FAULT_AFTER")
            .env_remove("STACK_STATE_DIR")
            .env_remove("KUBECONFIG")
            .env_remove("STACK_KUBE");
        c
    }

    /// Runs the CLI; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = c.stdin(Stdio::null()).output().expect("run stack");
        let out = (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        );
        eprintln!(
            "$ stack {}\n-> exit {}\n{}{}",
            args.join(" "),
            out.0,
            out.1,
            out.2
        );
        out
    }

    /// Runs the CLI and asserts its exit code; returns stdout.
    #[track_caller]
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let (got, out, err) = self.run(args);
        assert_eq!(got, code, "stack {}: {out}{err}", args.join(" "));
        out
    }

    /// Every AWS request the project's commands have sent so far (each command runs
    /// with `STACK_REQUEST_LOG` set).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        RequestLog::read(&self.path(REQUEST_LOG)).expect("request log")
    }

    /// Runs `stack up --yes`, asserts that every AWS request sent so far and every
    /// Kubernetes object in the state follow AWS's documented rules
    /// ([`stack::aws_rules`]: moto takes what AWS refuses), and returns stdout and the
    /// requests.
    #[track_caller]
    pub fn up_following_aws_rules(&self, stack: &str) -> (String, Vec<LoggedRequest>) {
        let out = self.expect(&["up", "--yes"], 0);
        let requests = self.requests();
        let state = self.state(stack);
        let k8s: Vec<serde_json::Value> = state["resources"]
            .as_object()
            .expect("resources")
            .values()
            .filter(|r| r["kind"].as_str().is_some_and(|k| k.starts_with("k8s:")))
            .map(|r| r["props"].clone())
            .collect();
        let evidence = stack::aws_rules::Evidence {
            requests: &requests,
            k8s: &k8s,
            today: stack::app::eks_versions::today(),
        };
        let broken: Vec<String> = stack::aws_rules::check(&evidence)
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert!(
            broken.is_empty(),
            "AWS would refuse or break on:\n{}",
            broken.join("\n")
        );
        (out, requests)
    }

    pub fn state(&self, stack: &str) -> serde_json::Value {
        let p = self.path(&format!(".stack/{stack}.local.json"));
        serde_json::from_slice(&std::fs::read(p).expect("state file")).expect("state json")
    }
}

/// Asserts that `out` contains each of `parts`.
#[track_caller]
pub fn assert_has(out: &str, parts: &[&str]) {
    for part in parts {
        assert!(out.contains(part), "{part:?} not in:\n{out}");
    }
}

/// SDK clients pointed at moto, for checks made independently of the engine.
pub async fn clients(endpoint: &str) -> stack::providers::aws::Clients {
    stack::providers::aws::Clients::new(
        &stack::providers::aws::AwsTarget::Local {
            endpoint: endpoint.into(),
        },
        "us-east-1",
    )
    .await
}

/// Lambda function `name`, read with a plain SDK call.
pub async fn function(
    c: &stack::providers::aws::Clients,
    name: &str,
) -> aws_sdk_lambda::operation::get_function::GetFunctionOutput {
    let r = c.lambda.get_function().function_name(name).send().await;
    r.unwrap_or_else(|e| panic!("GetFunction {name}: {e:?}"))
}

/// Node group `name` of cluster `cluster`, read with a plain SDK call.
pub async fn nodegroup(
    c: &stack::providers::aws::Clients,
    cluster: &str,
    name: &str,
) -> aws_sdk_eks::types::Nodegroup {
    let r = c.eks.describe_nodegroup().cluster_name(cluster);
    let r = r.nodegroup_name(name).send().await;
    let r = r.unwrap_or_else(|e| panic!("DescribeNodegroup {name}: {e:?}"));
    r.nodegroup.expect("a node group")
}

/// The route tables tagged with `stack`.
pub async fn route_tables(
    c: &stack::providers::aws::Clients,
    stack: &str,
) -> Vec<aws_sdk_ec2::types::RouteTable> {
    let f = aws_sdk_ec2::types::Filter::builder()
        .name("tag:stack")
        .values(stack)
        .build();
    let r = c.ec2.describe_route_tables().filters(f).send().await;
    r.unwrap().route_tables.unwrap_or_default()
}

/// Everything in moto tagged `stack=<stack>`, listed service by service with plain SDK
/// calls: `kind:id` strings, sorted.
pub async fn tagged(c: &stack::providers::aws::Clients, stack: &str) -> Vec<String> {
    use aws_sdk_ec2::types::Filter;
    let mut out = Vec::new();
    let is_ours = |t: Option<&std::collections::HashMap<String, String>>| {
        t.and_then(|t| t.get("stack")).map(String::as_str) == Some(stack)
    };

    for r in c.iam.list_roles().send().await.unwrap().roles() {
        let g = c
            .iam
            .get_role()
            .role_name(r.role_name())
            .send()
            .await
            .unwrap();
        if g.role()
            .unwrap()
            .tags()
            .iter()
            .any(|t| t.key() == "stack" && t.value() == stack)
        {
            out.push(format!("iam-role:{}", r.role_name()));
        }
    }
    for f in c.lambda.list_functions().send().await.unwrap().functions() {
        let arn = f.function_arn().unwrap();
        let t = c.lambda.list_tags().resource(arn).send().await.unwrap();
        if is_ours(t.tags()) {
            out.push(format!("lambda:{}", f.function_name().unwrap()));
        }
    }
    let f = Filter::builder().name("tag:stack").values(stack).build();
    let vpcs = c.ec2.describe_vpcs().filters(f.clone()).send().await;
    for v in vpcs.unwrap().vpcs() {
        out.push(format!("vpc:{}", v.vpc_id().unwrap()));
    }
    let subnets = c.ec2.describe_subnets().filters(f.clone()).send().await;
    for s in subnets.unwrap().subnets() {
        out.push(format!("subnet:{}", s.subnet_id().unwrap()));
    }
    let igws = c
        .ec2
        .describe_internet_gateways()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    for g in igws.internet_gateways() {
        out.push(format!("igw:{}", g.internet_gateway_id().unwrap()));
    }
    for t in route_tables(c, stack).await {
        out.push(format!("route-table:{}", t.route_table_id().unwrap()));
    }
    for a in c.apigw.get_apis().send().await.unwrap().items() {
        if is_ours(a.tags()) {
            out.push(format!("api:{}", a.name().unwrap()));
        }
    }
    for name in c.eks.list_clusters().send().await.unwrap().clusters() {
        let d = c.eks.describe_cluster().name(name).send().await.unwrap();
        if is_ours(d.cluster().unwrap().tags()) {
            out.push(format!("eks:{name}"));
        }
        for ng in c
            .eks
            .list_nodegroups()
            .cluster_name(name)
            .send()
            .await
            .unwrap()
            .nodegroups()
        {
            let n = c
                .eks
                .describe_nodegroup()
                .cluster_name(name)
                .nodegroup_name(ng)
                .send()
                .await
                .unwrap();
            if is_ours(n.nodegroup().unwrap().tags()) {
                out.push(format!("nodegroup:{ng}"));
            }
        }
    }
    for r in c
        .ecr
        .describe_repositories()
        .send()
        .await
        .unwrap()
        .repositories()
    {
        let t = c
            .ecr
            .list_tags_for_resource()
            .resource_arn(r.repository_arn().unwrap())
            .send()
            .await
            .unwrap();
        if t.tags()
            .iter()
            .any(|t| t.key() == "stack" && t.value() == stack)
        {
            out.push(format!("ecr:{}", r.repository_name().unwrap()));
        }
    }
    for g in c
        .logs
        .describe_log_groups()
        .send()
        .await
        .unwrap()
        .log_groups()
    {
        let arn = g.arn().unwrap().trim_end_matches(":*");
        let t = c
            .logs
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .unwrap();
        if is_ours(t.tags()) {
            out.push(format!("logs:{}", g.log_group_name().unwrap()));
        }
    }
    out.sort();
    out
}

/// The number of taggable resources the app declares (untaggable ones: 6 policy
/// attachments, the Lambda permission, the integration and the route).
pub const TAGGABLE_RESOURCES: usize = 15;
/// Every resource the app declares.
pub const ALL_RESOURCES: usize = 30;
