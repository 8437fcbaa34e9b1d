//! The Kubernetes provider through kube-rs over HTTP against the in-memory API
//! (kube-fake-client served on loopback), the EKS token vector, and `synth --k8s`.

mod common;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Probe, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

use stack::app::k8s as manifests;
use stack::config::K8sConfig;
use stack::engine::Input;
use stack::error::ProviderError;
use stack::providers::Provider;
use stack::providers::k8s::{self, Kube, KubeSource, ObjectProvider, eks_token, fake};

const STACK: &str = "t";

async fn server() -> fake::Server {
    fake::FakeApi::new(None)
        .await
        .unwrap()
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

fn provider(s: &fake::Server, rollout: Option<Duration>) -> ObjectProvider {
    let mut p = ObjectProvider::new(Kube::new(KubeSource::Ready(s.client().unwrap())), rollout);
    p.delete_timeout = Duration::from_secs(5);
    p
}

/// An API server, a provider without rollout waits on it (the server must outlive it)
/// and the test configuration: what most tests start from.
async fn cluster() -> (fake::Server, ObjectProvider, K8sConfig) {
    let s = server().await;
    let p = provider(&s, None);
    (s, p, cfg())
}

fn cfg() -> K8sConfig {
    K8sConfig {
        namespace: "ml".into(),
        ..K8sConfig::default()
    }
}

fn image(s: &str) -> Input<String> {
    Input::Value(s.into())
}

/// Writes the Deployment's status, as its controller would.
async fn report_status(deps: &Api<Deployment>, status: &Value) {
    deps.patch_status(
        "sentiment-server",
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .unwrap();
}

/// Whether a read finds the object matching the declaration (no diff).
async fn unchanged(p: &ObjectProvider, desired: &Value) -> bool {
    let o = p.read(None, desired, None).await.unwrap().expect("exists");
    &o.props == desired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_service_hpa_create_diff_update_delete() {
    let (s, p, c) = cluster().await;
    let ns = manifests::namespace(STACK, &c);
    let dep = manifests::deployment(STACK, &c, &image("reg/server@sha256:aaa"));
    let svc = manifests::service(STACK, &c);
    let hpa = manifests::hpa(STACK, &c);

    // Create.
    for m in [&ns, &dep, &svc, &hpa] {
        assert!(p.read(None, m, None).await.unwrap().is_none());
        let o = p.create(m).await.unwrap();
        assert_eq!(o.outputs["name"], m["metadata"]["name"]);
    }
    let client = s.client().unwrap();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "ml");
    let d = deps.get("sentiment-server").await.unwrap();
    let spec = d.spec.unwrap();
    let labels = d.metadata.labels.unwrap();
    assert_eq!(labels[k8s::LABEL_MANAGED_BY], "stack");
    assert_eq!(spec.replicas, None, "the HPA owns the replica count");
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(
        ru.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    let ctr = &pod.containers[0];
    assert_eq!(ctr.image.as_deref(), Some("reg/server@sha256:aaa"));
    let res = ctr.resources.clone().unwrap();
    assert_eq!(res.limits.unwrap()["cpu"].0, "2", "CPU limit = threads");
    let probe_path = |probe: &Option<Probe>| probe.clone().unwrap().http_get.unwrap().path;
    assert_eq!(probe_path(&ctr.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(probe_path(&ctr.liveness_probe).as_deref(), Some("/healthz"));
    let mf = d.metadata.managed_fields.unwrap_or_default();
    assert!(mf.iter().any(|m| m.manager.as_deref() == Some("stack")));

    // No-op diff: everything reads back as declared.
    for m in [&ns, &dep, &svc, &hpa] {
        assert!(unchanged(&p, m).await, "{}", m["kind"]);
    }

    // The HPA scales the Deployment; then an image and HPA target update. Neither the
    // diff nor the apply touches the replicas the HPA set.
    deps.patch(
        "sentiment-server",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    assert!(unchanged(&p, &dep).await, "a scaled Deployment is no drift");
    let mut c2 = c.clone();
    c2.cpu_target_percent = 50;
    let dep2 = manifests::deployment(STACK, &c2, &image("reg/server@sha256:bbb"));
    let hpa2 = manifests::hpa(STACK, &c2);
    let seen = p.read(None, &dep2, None).await.unwrap().unwrap();
    assert_eq!(
        seen.props["spec"]["template"]["spec"]["containers"][0]["image"],
        "reg/server@sha256:aaa"
    );
    assert!(!unchanged(&p, &hpa2).await);
    p.update(&seen.id, &seen.props, &dep2).await.unwrap();
    p.update("ml/sentiment-server", &hpa, &hpa2).await.unwrap();
    assert!(unchanged(&p, &dep2).await);
    assert!(unchanged(&p, &hpa2).await);
    let d = deps.get("sentiment-server").await.unwrap().spec.unwrap();
    assert_eq!(d.replicas, Some(4), "the apply kept the HPA's count");
    assert_eq!(
        d.template.spec.unwrap().containers[0].image.as_deref(),
        Some("reg/server@sha256:bbb")
    );
    let h: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "ml");
    let h = h.get("sentiment-server").await.unwrap().spec.unwrap();
    assert_eq!(
        h.metrics.unwrap()[0]
            .resource
            .as_ref()
            .unwrap()
            .target
            .average_utilization,
        Some(50)
    );

    // Delete (foreground) and read back nothing.
    for m in [&hpa2, &svc, &dep2] {
        p.delete("", m).await.unwrap();
        assert!(p.read(None, m, None).await.unwrap().is_none());
    }
    // Deleting what is gone succeeds.
    p.delete("", &svc).await.unwrap();
    let svcs: Api<Service> = Api::namespaced(client, "ml");
    assert!(svcs.get_opt("sentiment-server").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_diff_persists_nothing() {
    let (_s, p, c) = cluster().await;
    let dep = manifests::deployment(STACK, &c, &image("a"));
    p.create(&dep).await.unwrap();
    let changed = manifests::deployment(STACK, &c, &image("b"));
    for _ in 0..2 {
        let o = p.read(None, &changed, None).await.unwrap().unwrap();
        assert_eq!(
            o.props["spec"]["template"]["spec"]["containers"][0]["image"],
            "a"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_labelled_objects_no_longer_declared() {
    let (s, p, c) = cluster().await;
    let dep = manifests::deployment(STACK, &c, &image("a"));
    let svc = manifests::service(STACK, &c);
    let pdb = manifests::pdb(STACK, &c);
    let other = manifests::service("another-stack", &c);
    let mut other = other;
    other["metadata"]["name"] = "other".into();
    for m in [&dep, &svc, &pdb, &other] {
        p.create(m).await.unwrap();
    }
    let keep = vec![k8s::prune_id(&dep), k8s::prune_id(&svc)];
    let client = s.client().unwrap();
    let pruned = k8s::prune(&client, STACK, &keep).await.unwrap();
    assert_eq!(pruned, vec!["PodDisruptionBudget ml/sentiment-server"]);
    assert!(p.read(None, &pdb, None).await.unwrap().is_none());
    assert!(p.read(None, &dep, None).await.unwrap().is_some());
    assert!(
        p.read(None, &other, None).await.unwrap().is_some(),
        "another stack's objects are left alone"
    );
    assert!(k8s::prune(&client, STACK, &keep).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_wait_follows_the_deployment_status() {
    let s = server().await;
    let c = cfg();
    let dep = manifests::deployment(STACK, &c, &image("a"));

    // Nothing reports progress: the wait times out.
    let p = provider(&s, Some(Duration::from_millis(600)));
    let e = p.create(&dep).await.unwrap_err();
    assert!(matches!(e, ProviderError::Timeout { .. }), "{e}");

    // A controller that reports the rollout after a moment: the apply completes.
    let client = s.client().unwrap();
    let deps: Api<Deployment> = Api::namespaced(client, "ml");
    let controller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Like the Deployment controller: report the generation it has seen, and the
        // API's default of 1 replica (the manifest leaves the count to the HPA).
        let d = deps.get("sentiment-server").await.unwrap();
        let generation = d.metadata.generation.unwrap_or(1);
        let status = json!({ "status": {
            "observedGeneration": generation,
            "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1
        }});
        report_status(&deps, &status).await;
    });
    let p = provider(&s, Some(Duration::from_secs(10)));
    p.update("ml/sentiment-server", &dep, &dep).await.unwrap();
    controller.await.unwrap();
}

/// After a rollout that completed, pods that keep dying leave `Progressing` True:
/// only `Available` False and the pods' own status say so. Such a Deployment reads as
/// failed (planned for replacement, with the reason) rather than as "No changes".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_crash_looping_after_its_rollout_reads_as_failed() {
    use k8s_openapi::api::core::v1::Pod;
    let s = server().await;
    let p = provider(&s, None);
    let dep = manifests::deployment(STACK, &cfg(), &image("a"));
    p.create(&dep).await.unwrap();
    let client = s.client().unwrap();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "ml");
    let selector = dep["spec"]["selector"]["matchLabels"].clone();
    let pods: Api<Pod> = Api::namespaced(client, "ml");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sentiment-server-7d-x1", "namespace": "ml", "labels": selector},
        "spec": {"containers": [{"name": "server", "image": "a"}]},
        "status": {"containerStatuses": [{
            "name": "server", "image": "a", "imageID": "", "ready": false,
            "restartCount": 6,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
        }]}
    }))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    let crash_looping = "pods crash-looping: pod sentiment-server-7d-x1 container server: \
                         CrashLoopBackOff, 6 restarts, last exit 137 (OOMKilled)";
    // Below its minimum: failed. Still serving its minimum: degraded, not failed.
    for (available, failed) in [("False", Some(crash_looping)), ("True", None)] {
        let status = json!({ "status": {
            "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0,
            "conditions": [
                {"type": "Available", "status": available, "reason": "MinimumReplicasUnavailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
            ]
        }});
        report_status(&deps, &status).await;
        let o = p.read(None, &dep, None).await.unwrap().expect("exists");
        let read = o.outputs.get(stack::providers::FAILED_OUTPUT);
        assert_eq!(
            read.and_then(Value::as_str),
            failed,
            "Available={available}"
        );
    }
}

#[test]
fn rollout_complete_needs_every_replica_updated_and_available() {
    let mut d = json!({
        "metadata": { "generation": 3 },
        "spec": { "replicas": 2 },
        "status": { "observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2 }
    });
    assert!(!k8s::rollout_complete(&d), "an old replica is still there");
    d["status"]["replicas"] = 2.into();
    assert!(k8s::rollout_complete(&d));
    d["status"]["observedGeneration"] = 2.into();
    assert!(
        !k8s::rollout_complete(&d),
        "controller has not seen the spec"
    );
}

/// KNOWN DIFFERENCE from a real API server: with server-side apply a field the
/// manager stops applying is removed there; kube-fake-client merges the apply, so the
/// field stays. This test pins the fake's behaviour so a fix upstream is noticed;
/// the provider does not rely on either (a real server's dry run shows the removal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_difference_fake_merges_fields_no_longer_applied() {
    let (s, p, c) = cluster().await;
    let mut with = manifests::service(STACK, &c);
    with["metadata"]["annotations"] = json!({ "example.com/extra": "1" });
    p.create(&with).await.unwrap();
    let without = manifests::service(STACK, &c);
    p.update("", &with, &without).await.unwrap();
    let svcs: Api<Service> = Api::namespaced(s.client().unwrap(), "ml");
    let live = svcs.get("sentiment-server").await.unwrap();
    let kept = live
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("example.com/extra");
    assert!(kept, "fake keeps the field (a real API server removes it)");
}

#[test]
fn eks_token_matches_botocore_vector() {
    // Computed by stack/tests/data/eks_token_vector.py (botocore's SigV4QueryAuth).
    // aws-sigv4 appends the session token after the signature where botocore puts it
    // before; the parameters, and so the signature, are the same.
    let creds = eks_token::Creds {
        access_key: "AKIDEXAMPLE".into(),
        secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("session/token+example=".into()),
    };
    let botocore = "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261129%2Fus-west-2%2Fsts%2Faws4_request&X-Amz-Date=20261129T010203Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Security-Token=session%2Ftoken%2Bexample%3D&X-Amz-Signature=ec0b473489d0490ba4eaf39f2d2ee96d185dc8b3deed923fac42ab598b259182";
    let params = |url: &str| {
        let (base, query) = url.split_once('?').unwrap();
        let mut pairs: Vec<String> = query.split('&').map(str::to_string).collect();
        pairs.sort();
        (base.to_string(), pairs)
    };
    let t = 1_795_914_123;
    let ours = eks_token::presigned_url(&creds, "us-west-2", "demo-cluster", t);
    assert_eq!(params(&ours), params(botocore));
    let token = eks_token::token(&creds, "us-west-2", "demo-cluster", t);
    let encoded = token.strip_prefix("k8s-aws-v1.").expect("token prefix");
    assert!(!encoded.contains('='), "base64url without padding");
    use base64::Engine;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), ours);
}

#[test]
fn synth_k8s_prints_yaml_documents() {
    let p = common::Project::new("http://127.0.0.1:9", "synth");
    let (code, out, err) = p.run(&["synth", "--k8s"]);
    assert_eq!(code, 0, "{err}");
    let docs: Vec<&str> = out
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    assert_eq!(docs.len(), 5, "{out}");
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| {
            let v: Value = serde_saphyr::from_str(d).unwrap();
            assert_eq!(v["metadata"]["labels"][k8s::LABEL_MANAGED_BY], "stack");
            v["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget"
        ]
    );
    assert!(out.contains("maxUnavailable: 0"), "{out}");
}

/// On EKS a LoadBalancer Service's apply returns before the ELB exists: `up` waits for
/// the address the cloud controller writes, and exports it as the service URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_service_waits_for_its_address() {
    let s = server().await;
    let c = cfg();
    assert_eq!(c.service_type, "LoadBalancer");
    let svc = manifests::service(STACK, &c);
    let ns = manifests::namespace(STACK, &c);
    let p = provider(&s, None);
    p.create(&ns).await.unwrap();

    // No controller: the wait times out, naming what it waited for.
    let mut waiting = provider(&s, None);
    waiting.load_balancer_timeout = Some(Duration::from_millis(300));
    let e = waiting.create(&svc).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Timeout { .. })
            && e.to_string().contains("kubernetes.io/role/elb"),
        "{e}"
    );

    // The cloud controller writes the ELB's name a moment later.
    let services: Api<Service> = Api::namespaced(s.client().unwrap(), "ml");
    let controller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = json!({ "status": { "loadBalancer": { "ingress": [
            { "hostname": "a1b2-123.us-east-1.elb.amazonaws.com" }
        ]}}});
        services
            .patch_status(
                "sentiment-server",
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
    });
    waiting.load_balancer_timeout = Some(Duration::from_secs(10));
    let o = waiting
        .update("ml/sentiment-server", &svc, &svc)
        .await
        .unwrap();
    controller.await.unwrap();
    assert_eq!(
        o.outputs["url"],
        "http://a1b2-123.us-east-1.elb.amazonaws.com/"
    );
}

/// Once the EKS cluster is gone (deleted outside the stack, or by a `down` that
/// stopped after it), its objects are gone with it: a read finds nothing and a delete
/// succeeds, so `down` can finish; any other failure to reach the cluster stays an
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_a_cluster_that_no_longer_exists_read_as_gone() {
    let m = common::moto();
    let c = common::clients(&m.url).await;
    let tmp = tempfile::tempdir().unwrap();
    let p = ObjectProvider::new(
        Kube::new(KubeSource::Eks {
            eks: c.eks.clone(),
            sdk: Box::new(c.sdk.clone()),
            cluster: "gone".into(),
            token_file: tmp.path().join("token"),
        }),
        None,
    );
    let dep = manifests::deployment(STACK, &cfg(), &image("a"));
    let id = "Deployment ml/sentiment-server";
    assert!(p.read(Some(id), &dep, None).await.unwrap().is_none());
    p.delete(id, &dep).await.unwrap();
    // An apply still needs the cluster, and says which.
    let err = p.create(&dep).await.unwrap_err().to_string();
    assert!(err.contains("EKS cluster does not exist"), "{err}");
}
