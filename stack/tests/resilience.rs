//! Interrupted applies, the state lock, and validation before any API call.

mod common;

use common::{Project, assert_has, clients, project_on_moto, tagged};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_up_resumes_without_duplicates_or_orphans() {
    let (m, p) = project_on_moto("crash");
    let c = clients(&m.url).await;

    // A fault after 7 operations: the apply stops cleanly with state saved.
    let (code, _, err) = p.run_env(
        &["up", "--yes", "--parallelism", "1"],
        &[("STACK_FAULT_AFTER", "7")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("apply interrupted (fault injected after 7 operations)"),
        "{err}"
    );
    let state = p.state("crash");
    let owned = state["resources"].as_object().unwrap();
    assert_eq!(owned.len(), 7, "state holds exactly what was created");
    // Every owned resource exists (its read by id finds it) and nothing else was made.
    let out = p.expect(&["diff"], 2);
    assert_has(
        &out,
        &[&format!(
            "{} to create, 0 to update, 0 to replace, 0 to delete, 7 unchanged",
            common::ALL_RESOURCES - 7
        )],
    );

    // The next up finishes the job.
    let out = p.expect(&["up", "--yes"], 0);
    // The rest, but the add-on the local control plane provides.
    assert_has(
        &out,
        &[&format!(
            "{} created, 0 updated, 0 replaced, 0 deleted, 1 provided by the target",
            common::ALL_RESOURCES - 7 - 1
        )],
    );
    assert_eq!(p.run(&["diff"]).0, 0);
    let all = tagged(&c, "crash").await;
    assert_eq!(
        all.len(),
        common::TAGGABLE_RESOURCES,
        "no duplicates: {all:?}"
    );
    assert_eq!(
        p.state("crash")["resources"].as_object().unwrap().len(),
        common::ALL_RESOURCES
    );

    // Resources made but never recorded (a crash between the API call and the state
    // write) are adopted, not duplicated: forget the VPC and an API in state.
    let mut st = p.state("crash");
    let res = st["resources"].as_object_mut().unwrap();
    res.remove("vpc");
    res.remove("http-api");
    std::fs::write(
        p.path(".stack/crash.local.json"),
        serde_json::to_vec(&st).unwrap(),
    )
    .unwrap();
    p.expect(&["up", "--yes"], 0);
    assert_eq!(
        tagged(&c, "crash").await.len(),
        common::TAGGABLE_RESOURCES,
        "adopted, not duplicated"
    );
    assert_eq!(
        p.state("crash")["resources"].as_object().unwrap().len(),
        common::ALL_RESOURCES
    );

    p.expect(&["down", "--yes"], 0);
    assert_eq!(tagged(&c, "crash").await, Vec::<String>::new());
}

#[test]
fn concurrent_up_is_refused_naming_the_holder() {
    let (_moto, p) = project_on_moto("lock");
    // The first `up` waits at its confirmation prompt, holding the lock.
    let mut first = p
        .cmd(&["up"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = p.path(".stack/lock.local.lock");
    let start = Instant::now();
    while !lock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "first up never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, _, err) = p.run(&["up", "--yes"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "state is locked by `stack up` (pid {}",
            first.id()
        )),
        "{err}"
    );
    let (code, _, err) = p.run(&["diff"]);
    assert_eq!(code, 1, "diff takes the same lock");
    assert!(err.contains("state is locked by `stack up`"), "{err}");

    // Answering "no" releases it; nothing was created.
    first.stdin.take().unwrap().write_all(b"no\n").unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled; nothing was changed"));
    assert!(!lock.exists(), "lock released");
    assert_eq!(p.run(&["diff"]).0, 2);
}

#[test]
fn invalid_config_is_rejected_before_any_api_call() {
    // Nothing listens on this endpoint: any API call would fail with DispatchFailure.
    let p = Project::new("http://127.0.0.1:9", "bad");
    p.config("bad", |v| {
        v["lambda"]["memory_mb"] = 100_000.into();
        v["prefix"] = "".into();
        v["eks"]["instance_type"] = "big".into();
    });
    for cmd in [
        &["diff"][..],
        &["up", "--yes"],
        &["down", "--yes"],
        &["refresh"],
    ] {
        let (code, _, err) = p.run(cmd);
        assert_eq!(code, 1);
        assert!(err.contains("invalid stack configuration"), "{err}");
        assert!(
            err.contains("memory_mb 100000 must be between 128 and 10240"),
            "{err}"
        );
        assert!(err.contains("prefix `` must be non-empty"), "{err}");
        assert!(
            err.contains("instance type `big` is not of the form family.size"),
            "{err}"
        );
        assert!(!err.contains("DispatchFailure"), "{err}");
    }
    assert!(!p.path(".stack").exists(), "no state or lock touched");

    // Unknown fields are rejected too.
    p.config("bad", |v| v["lambda"]["memroy_mb"] = 512.into());
    let (code, _, err) = p.run(&["diff"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown field `memroy_mb`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_network_replaces_dependents_in_order() {
    let (m, p) = project_on_moto("net");
    let c = clients(&m.url).await;
    assert_eq!(p.run(&["up", "--yes"]).0, 0);

    // A new VPC CIDR forces the VPC, hence the subnets, the cluster and the node group.
    p.config("net", |v| {
        v["network"] = serde_json::json!({ "vpc_cidr": "10.50.0.0/16", "subnet_cidrs": ["10.50.0.0/20", "10.50.16.0/20"] });
    });
    let out = p.expect(&["diff"], 2);
    assert_has(
        &out,
        &[
            "-/+ aws:ec2:Vpc `vpc`: replace (forced by cidr_block)",
            "-/+ aws:ec2:Subnet `subnet-a`: replace (forced by cidr_block, vpc_id)",
            "-/+ aws:eks:Cluster `eks-cluster`: replace (forced by subnet_ids)",
            "-/+ aws:eks:NodeGroup `eks-nodes`",
            // The Kubernetes objects live in the cluster: they go with it and are
            // applied again in the new one.
            "-/+ k8s:core/v1:Service `k8s-service`: replace (forced by `eks-cluster`, which it lives in)",
            "-/+ k8s:apps/v1:Deployment `k8s-deployment`: replace (forced by `eks-cluster`, which it lives in)",
        ],
    );
    let (code, out, err) = p.run(&["up", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    // Dependents are deleted before what they depend on.
    let pos = |s: &str| {
        err.find(s)
            .unwrap_or_else(|| panic!("{s} missing in {err}"))
    };
    assert!(
        pos("deleting aws:eks:NodeGroup `eks-nodes`")
            < pos("deleting aws:eks:Cluster `eks-cluster`")
    );
    // The Service (and a load balancer it has on EKS) goes before its cluster.
    assert!(
        pos("deleting k8s:core/v1:Service `k8s-service`")
            < pos("deleting aws:eks:Cluster `eks-cluster`")
    );
    assert!(
        pos("deleting aws:eks:Cluster `eks-cluster`") < pos("deleting aws:ec2:Subnet `subnet-a`")
    );
    assert!(pos("deleting aws:ec2:Subnet `subnet-a`") < pos("deleting aws:ec2:Vpc `vpc`"));
    assert_eq!(p.run(&["diff"]).0, 0);
    let vpcs = c
        .ec2
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:stack")
                .values("net")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1);
    assert_eq!(vpcs.vpcs()[0].cidr_block(), Some("10.50.0.0/16"));
    assert_eq!(tagged(&c, "net").await.len(), common::TAGGABLE_RESOURCES);
}

#[test]
fn unreachable_endpoint_error_names_resource_operation_code_and_hint() {
    let p = Project::new("http://127.0.0.1:9", "down");
    let t = Instant::now();
    let (code, _, err) = p.run(&["diff"]);
    assert_eq!(code, 1);
    assert!(err.contains("failed: DispatchFailure"), "{err}");
    assert!(
        err.contains("aws:") && err.contains("`"),
        "names the resource: {err}"
    );
    assert!(
        err.contains("hint: the endpoint could not be reached"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "gave up in reasonable time"
    );
}

/// A lock left by a run on another host (a CI runner that died, say) is never taken
/// over silently: `stack unlock` names it and wants `--force`; then runs go on.
#[test]
fn a_lock_from_another_host_needs_unlock_force() {
    let (_moto, p) = project_on_moto("unlock");
    let lock = p.path(".stack/unlock.local.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(
        &lock,
        r#"{"pid": 4242, "host": "ci-runner-7", "command": "up", "since_unix": 1700000000}"#,
    )
    .unwrap();
    let (code, _, err) = p.run(&["diff"]);
    assert_eq!(code, 1);
    assert!(err.contains("pid 4242 on ci-runner-7"), "{err}");
    let (code, _, err) = p.run(&["unlock"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("locked by `stack up` (pid 4242 on ci-runner-7") && err.contains("--force"),
        "{err}"
    );
    assert!(lock.exists(), "kept without --force");
    let out = p.expect(&["unlock", "--force"], 0);
    assert_has(
        &out,
        &["Removed the lock of `stack up` (pid 4242 on ci-runner-7"],
    );
    assert!(!lock.exists());
    assert_has(&p.expect(&["unlock"], 0), &["No lock on"]);
    assert_eq!(p.run(&["diff"]).0, 2);
}

/// An IAM Identity Center (SSO) profile is the usual way people sign in: without a
/// session the run must fail on the credentials, saying so, and not blame an endpoint.
#[test]
fn an_sso_profile_without_a_session_fails_on_the_credentials() {
    let p = Project::new("http://127.0.0.1:9", "sso");
    let config = p.path("aws-config");
    std::fs::write(
        &config,
        "[profile dev]\nsso_session = corp\nsso_account_id = 111122223333\n\
         sso_role_name = Deployer\nregion = us-east-1\n\n\
         [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n\
         sso_region = us-east-1\nsso_registration_scopes = sso:account:access\n",
    )
    .unwrap();
    let out = p
        .cmd(&["--target", "aws", "diff"])
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", p.path("no-credentials"))
        .env("AWS_PROFILE", "dev")
        .env("HOME", p.dir.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CredentialsError"), "{err}");
    assert!(
        err.to_lowercase().contains("sso"),
        "the SSO provider ran: {err}"
    );
    assert!(err.contains("check the AWS credentials"), "{err}");
    assert!(!err.contains("could not be reached"), "{err}");
}

/// A resource holding a declared name that this stack did not make is never adopted
/// (`down` would delete it): `up` and `diff` fail naming it and the way out, and
/// `stack import` takes it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_not_tagged_as_ours_is_refused_until_imported() {
    let (m, p) = project_on_moto("owner");
    let c = clients(&m.url).await;
    // Another stack's role, with the name this stack gives its Lambda role.
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let tag = aws_sdk_iam::types::Tag::builder()
        .key("stack")
        .value("other")
        .build()
        .unwrap();
    let r = c.iam.create_role().role_name("owner-lambda-exec");
    r.assume_role_policy_document(trust)
        .tags(tag)
        .send()
        .await
        .unwrap();

    for command in [&["up", "--yes"][..], &["diff"]] {
        let (code, _, err) = p.run(command);
        assert_eq!(code, 1, "{err}");
        assert_has(
            &err,
            &[
                "aws:iam:Role `lambda-role`: `owner-lambda-exec` already exists and is not \
                 this stack's (it is tagged stack=other)",
                "stack import lambda-role owner-lambda-exec",
            ],
        );
    }
    assert_eq!(
        tagged(&c, "owner").await,
        Vec::<String>::new(),
        "nothing made"
    );

    // Import errors name what is wrong and record nothing.
    let (code, _, err) = p.run(&["import", "no-such", "x"]);
    assert_eq!(code, 1);
    assert_has(&err, &["no resource `no-such` is declared", "lambda-role"]);
    let (code, _, err) = p.run(&["import", "lambda-role", "nobody-s-role"]);
    assert_eq!(code, 1);
    assert_has(&err, &["aws:iam:Role `nobody-s-role` does not exist"]);

    let out = p.expect(&["import", "lambda-role", "owner-lambda-exec"], 0);
    assert_has(
        &out,
        &["Imported aws:iam:Role `lambda-role` as `owner-lambda-exec`"],
    );
    let (code, _, err) = p.run(&["import", "lambda-role", "owner-lambda-exec"]);
    assert_eq!(code, 1);
    assert_has(&err, &["already in state"]);
    // Now the stack's: updated to the declaration (its tags), then deleted by down.
    let out = p.expect(&["diff"], 2);
    assert_has(&out, &["~ aws:iam:Role `lambda-role`", "stack"]);
    p.expect(&["up", "--yes"], 0);
    let tags = c
        .iam
        .list_role_tags()
        .role_name("owner-lambda-exec")
        .send()
        .await;
    let stack_tag = tags
        .unwrap()
        .tags()
        .iter()
        .find(|t| t.key() == "stack")
        .map(|t| t.value().to_string());
    assert_eq!(stack_tag.as_deref(), Some("owner"));
    p.expect(&["down", "--yes"], 0);
    assert!(
        c.iam
            .get_role()
            .role_name("owner-lambda-exec")
            .send()
            .await
            .is_err()
    );
}

/// Zone names map to different zone ids in each account, and EKS cannot use some ids
/// (`use1-az3`, moto's `us-east-1e`): on AWS, `diff` and `up` check the subnets' zones
/// before anything is made and name the usable ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_aws_zones_eks_cannot_use_are_refused_before_anything_is_made() {
    let (m, p) = project_on_moto("zones");
    let aws = |args: &[&str]| {
        let mut c = p.cmd(&[&["--target", "aws"], args].concat());
        c.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null());
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), text)
    };
    p.config("zones", |v| {
        v["network"] = serde_json::json!({ "availability_zones": ["us-east-1e", "us-east-1a"] });
    });
    for command in [&["diff"][..], &["up", "--yes"]] {
        let (code, err) = aws(command);
        assert_eq!(code, Some(1), "{err}");
        assert_has(
            &err,
            &[
                "network.availability_zones: us-east-1e is use1-az3 in this account, a zone \
                 EKS does not support; set two of us-east-1a, us-east-1b",
            ],
        );
    }
    p.config("zones", |v| {
        v["network"] = serde_json::json!({ "availability_zones": ["us-east-1a", "eu-west-1a"] });
    });
    let (code, err) = aws(&["diff"]);
    assert_eq!(code, Some(1));
    assert_has(&err, &["eu-west-1a is not a zone of us-east-1"]);
    // The default zones pass; the plan is all creates.
    p.config("zones", |_| {});
    let (code, err) = aws(&["diff"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(tagged(&clients(&m.url).await, "zones").await.is_empty());
}
