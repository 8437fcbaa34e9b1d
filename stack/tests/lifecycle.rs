//! The whole lifecycle against moto: diff, up (checked with independent SDK calls),
//! idempotence, in-place update, replacement, drift, down.

mod common;

use common::{Project, assert_has, clients, function, moto, nodegroup, tagged};
use stack::providers::aws::request_log::LoggedRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle() {
    let m = moto();
    let p = Project::new(&m.url, "life");
    let c = clients(&m.url).await;

    // Nothing exists: every resource is a create, exit 2.
    let out = p.expect(&["diff"], 2);
    assert_has(
        &out,
        &[
            "  + aws:lambda:Function `lambda-function`: create",
            &format!(
                "Plan: {} to create, 0 to update, 0 to replace, 0 to delete",
                common::ALL_RESOURCES
            ),
        ],
    );

    // up creates everything, with requests AWS would take (checked against AWS's
    // documented rules, where moto is lax).
    let (out, sent) = p.up_following_aws_rules("life");
    let checked = [
        ("Lambda", "AddPermission"),
        ("Lambda", "CreateFunction"),
        ("ApiGatewayV2", "CreateIntegration"),
        ("EKS", "CreateCluster"),
        ("EKS", "CreateNodegroup"),
        ("EC2", "CreateSubnet"),
        ("EC2", "ModifyVpcAttribute"),
    ];
    for (service, op) in checked {
        let seen = sent
            .iter()
            .any(|r| r.service == service && r.operation == op);
        assert!(
            seen,
            "no {service} {op} in the request log: its rules checked nothing"
        );
    }
    assert_has(
        &out,
        &[
            // The metrics-server add-on is the local control plane's, not created.
            &format!(
                "{} created, 0 updated, 0 replaced, 0 deleted, 1 provided by the target",
                common::ALL_RESOURCES - 1
            ),
            // The local target serves the API on loopback (tests/local_front.rs runs it).
            "api_url = http://127.0.0.1:",
        ],
    );

    // Independent checks with plain SDK calls.
    let f = function(&c, "life-predict").await;
    let conf = f.configuration().unwrap();
    assert_eq!(conf.memory_size(), Some(1024));
    assert_eq!(
        conf.role(),
        Some("arn:aws:iam::123456789012:role/life-lambda-exec")
    );
    assert_eq!(
        f.tags().unwrap().get("managed-by").map(String::as_str),
        Some("stack")
    );
    let apis = c.apigw.get_apis().send().await.unwrap();
    let api = apis
        .items()
        .iter()
        .find(|a| a.name() == Some("life-http"))
        .expect("api");
    let api_id = api.api_id().unwrap();
    let routes = c.apigw.get_routes().api_id(api_id).send().await.unwrap();
    let route = routes
        .items()
        .iter()
        .find(|r| r.route_key() == Some("POST /predict"))
        .expect("route");
    let integ_id = route.target().unwrap().trim_start_matches("integrations/");
    let integ = c
        .apigw
        .get_integration()
        .api_id(api_id)
        .integration_id(integ_id)
        .send()
        .await
        .unwrap();
    assert_eq!(integ.payload_format_version(), Some("2.0"));
    assert_eq!(integ.integration_uri(), conf.function_arn());
    let stage = c
        .apigw
        .get_stage()
        .api_id(api_id)
        .stage_name("$default")
        .send()
        .await
        .unwrap();
    assert_eq!(stage.auto_deploy(), Some(true));
    let policy = c
        .lambda
        .get_policy()
        .function_name("life-predict")
        .send()
        .await
        .unwrap();
    let policy = policy.policy().unwrap();
    assert!(policy.contains("apigateway.amazonaws.com"), "{policy}");
    // AWS matches SourceArn against `<execution arn>/<stage>/<method>/<path>`: the
    // bare execution ARN would refuse every request through the API.
    let source_arn = format!("arn:aws:execute-api:us-east-1:123456789012:{api_id}/*/*");
    assert!(policy.contains(&source_arn), "{source_arn} not in {policy}");
    let lg = c
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/aws/lambda/life-predict")
        .send()
        .await
        .unwrap();
    assert_eq!(lg.log_groups()[0].retention_in_days(), Some(14));
    let cl = c.eks.describe_cluster().name("life").send().await.unwrap();
    assert_eq!(
        cl.cluster()
            .unwrap()
            .resources_vpc_config()
            .unwrap()
            .subnet_ids()
            .len(),
        2
    );
    let ng = nodegroup(&c, "life", "life-nodes").await;
    assert_eq!(ng.instance_types(), ["t3.large"]);
    let att = c
        .iam
        .list_attached_role_policies()
        .role_name("life-eks-node")
        .send()
        .await
        .unwrap();
    assert_eq!(att.attached_policies().len(), 3);
    let subnets = c
        .ec2
        .describe_subnets()
        .subnet_ids(
            cl.cluster()
                .unwrap()
                .resources_vpc_config()
                .unwrap()
                .subnet_ids()[0]
                .clone(),
        )
        .send()
        .await
        .unwrap();
    let subnet = &subnets.subnets()[0];
    assert_eq!(subnet.availability_zone(), Some("us-east-1a"));
    // EKS's subnet requirements for an internet-facing LoadBalancer Service.
    let subnet_tags: Vec<(&str, &str)> = subnet
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
        .collect();
    assert!(
        subnet_tags.contains(&("kubernetes.io/role/elb", "1")),
        "{subnet_tags:?}"
    );
    assert!(
        subnet_tags.contains(&("kubernetes.io/cluster/life", "shared")),
        "{subnet_tags:?}"
    );
    // Nodes register by DNS name: the VPC has DNS support and hostnames.
    let vpc_id = subnet.vpc_id().unwrap();
    for attribute in [
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsSupport,
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames,
    ] {
        let a = c
            .ec2
            .describe_vpc_attribute()
            .vpc_id(vpc_id)
            .attribute(attribute.clone())
            .send()
            .await
            .unwrap();
        let on = a
            .enable_dns_support()
            .or(a.enable_dns_hostnames())
            .and_then(|v| v.value());
        assert_eq!(on, Some(true), "{attribute:?}");
    }
    assert_eq!(tagged(&c, "life").await.len(), common::TAGGABLE_RESOURCES);
    // Public subnets with a default route to the internet gateway (node egress).
    let rt = &common::route_tables(&c, "life").await[0];
    assert!(
        rt.routes()
            .iter()
            .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
                && r.gateway_id().is_some_and(|g| g.starts_with("igw-")))
    );
    assert_eq!(
        rt.associations()
            .iter()
            .filter(|a| a.subnet_id().is_some())
            .count(),
        2
    );
    assert_eq!(
        p.state("life")["resources"].as_object().unwrap().len(),
        common::ALL_RESOURCES
    );

    // Converged: diff says nothing, up changes nothing.
    let out = p.expect(&["diff"], 0);
    assert_has(
        &out,
        &[&format!(
            "No changes. {} resources up to date.",
            common::ALL_RESOURCES
        )],
    );
    let before = std::fs::read(p.path(".stack/life.local.json")).unwrap();
    let (code, out, err) = p.run(&["up", "--yes"]);
    assert_eq!(code, 0);
    assert!(
        !out.contains("Apply complete") && !err.contains("creating") && !err.contains("updating"),
        "{out}{err}"
    );
    assert_eq!(
        before,
        std::fs::read(p.path(".stack/life.local.json")).unwrap(),
        "second up must not touch state"
    );

    // JSON diff for machines.
    let out = p.expect(&["diff", "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["unchanged"], common::ALL_RESOURCES);

    // Memory change: one in-place update.
    p.config("life", |v| v["lambda"]["memory_mb"] = 512.into());
    let out = p.expect(&["diff"], 2);
    assert_has(
        &out,
        &[
            "  ~ aws:lambda:Function `lambda-function`: update in place",
            "memory_mb: 1024 -> 512",
            "0 to create, 1 to update, 0 to replace, 0 to delete",
        ],
    );
    let out = p.expect(&["up", "--yes"], 0);
    assert_has(&out, &["0 created, 1 updated, 0 replaced, 0 deleted"]);
    let f = function(&c, "life-predict").await;
    assert_eq!(f.configuration().unwrap().memory_size(), Some(512));

    // Immutable change: the node group is replaced, and the diff names the property.
    p.config("life", |v| {
        v["lambda"]["memory_mb"] = 512.into();
        v["eks"]["instance_type"] = "m6i.xlarge".into();
    });
    let out = p.expect(&["diff"], 2);
    assert_has(
        &out,
        &[
            "-/+ aws:eks:NodeGroup `eks-nodes`: replace (forced by instance_types)",
            r#"instance_types: ["t3.large"] -> ["m6i.xlarge"]  # forces replacement"#,
        ],
    );
    let out = p.expect(&["up", "--yes"], 0);
    assert_has(&out, &["0 created, 0 updated, 1 replaced, 0 deleted"]);
    let ng = nodegroup(&c, "life", "life-nodes").await;
    assert_eq!(ng.instance_types(), ["m6i.xlarge"]);

    // Out-of-band change: refresh and diff report the drift, up repairs it.
    c.lambda
        .update_function_configuration()
        .function_name("life-predict")
        .timeout(99)
        .send()
        .await
        .unwrap();
    let out = p.expect(&["diff"], 2);
    assert_has(
        &out,
        &[
            "[drift: timeout_s changed outside the stack]",
            "timeout_s: 99 -> 30",
        ],
    );
    // Drift exits 2, as diff does; once recorded, a second refresh finds none.
    let out = p.expect(&["refresh"], 2);
    assert_has(
        &out,
        &[
            "aws:lambda:Function `lambda-function`: changed outside the stack",
            "timeout_s: 30 -> 99",
        ],
    );
    let out = p.expect(&["refresh", "--json"], 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["drift"],
        serde_json::json!([])
    );
    p.expect(&["up", "--yes"], 0);
    let f = function(&c, "life-predict").await;
    assert_eq!(f.configuration().unwrap().timeout(), Some(30));
    assert_eq!(p.run(&["diff"]).0, 0);

    // Outputs.
    let (code, out, _) = p.run(&["outputs", "function_name"]);
    assert_eq!((code, out.trim()), (0, "life-predict"));

    // Machine-readable apply: JSON lines on stdout, from the plan to the outputs.
    p.config("life", |v| v["lambda"]["memory_mb"] = 1024.into());
    let out = p.expect(&["up", "--yes", "--json"], 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&str> = lines.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(events.len(), lines.len(), "{out}");
    assert_eq!(events.first(), Some(&"planned"), "{out}");
    assert!(
        events.contains(&"started") && events.contains(&"done"),
        "{out}"
    );
    assert_eq!(events.last(), Some(&"complete"), "{out}");
    assert_eq!(lines[0]["resource"], "lambda-function");
    assert_eq!(lines[0]["changes"][0]["field"], "memory_mb");
    let last = &lines[lines.len() - 1];
    assert_eq!(last["report"]["updated"], 1, "{out}");
    assert_eq!(last["outputs"]["function_name"], "life-predict");

    // down removes everything tagged, even with the artifacts `up` needed gone;
    // down again is a no-op.
    std::fs::remove_file(p.path("bootstrap.zip")).unwrap();
    let out = p.expect(&["down", "--yes"], 0);
    assert_has(
        &out,
        &[&format!(
            "0 created, 0 updated, 0 replaced, {} deleted, 1 provided by the target",
            common::ALL_RESOURCES - 1
        )],
    );
    assert_eq!(tagged(&c, "life").await, Vec::<String>::new());
    assert!(
        c.iam
            .list_attached_role_policies()
            .role_name("life-eks-node")
            .send()
            .await
            .is_err(),
        "role gone"
    );
    assert!(p.state("life")["resources"].as_object().unwrap().is_empty());
    let out = p.expect(&["down", "--yes"], 0);
    assert_has(&out, &["No changes. 0 resources up to date."]);

    // Every request of the whole lifecycle is one the documented deployer policy
    // allows, so a principal with only that policy can run it.
    let denied = stack::aws_rules::denied_by_deployer_policy(&p.requests());
    assert!(
        denied.is_empty(),
        "stack/aws/deployer-policy.json lacks {denied:?}"
    );
}

/// `stack synth --target aws --requests`: every request a first `up` sends, rehearsed
/// against a throwaway moto (the project's endpoint is never used), with what AWS
/// would assign as placeholders, and checked against AWS's rules and the deployer
/// policy. Nothing of the project's own state is written.
#[test]
fn synth_requests_rehearses_a_first_up_and_shows_placeholders() {
    let p = Project::new("http://127.0.0.1:9", "rehearse");
    let (code, out, err) = p.run(&["synth", "--target", "aws", "--requests"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_has(
        &out,
        &[
            "EC2 DescribeAvailabilityZones",
            "EC2 CreateVpc",
            "EC2 CreateSubnet",
            "IAM CreateRole",
            "Lambda CreateFunction",
            "Lambda AddPermission",
            "ApiGatewayV2 CreateApi",
            "EKS CreateCluster",
            "EKS CreateNodegroup",
            "\"VpcId\": \"<vpc.id>\"",
            "<account-id>",
            "not as AWS SDK requests above",
        ],
    );
    assert!(
        !out.contains("123456789012"),
        "moto's account id leaked:\n{out}"
    );
    assert_has(
        &err,
        &[
            "AWS's rules: 8 of 8 hold",
            "deployer policy: allows every one",
        ],
    );
    assert!(
        !p.path(".stack").exists(),
        "the rehearsal wrote the project's state"
    );

    let (code, out, err) = p.run(&["synth", "--target", "aws", "--requests", "--json"]);
    assert_eq!(code, 0, "{err}");
    let sent: Vec<LoggedRequest> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let subnets = sent.iter().filter(|r| r.operation == "CreateSubnet");
    assert!(subnets.count() >= 2, "{out}");
}
