//! The local kubelet: a Deployment's pods run from the image pushed to a registry (a
//! `docker-registry` the test starts), under runc when it can run here (root, runc
//! installed) and as plain processes from the unpacked image otherwise. Pods become
//! Ready behind the front, a failing liveness probe or an exit restarts a container, a new
//! template rolls to new pods without the front failing, and scale-down and delete
//! stop every container and free its port.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stack::artifacts::oci;
use stack::local::kubelet::{Kubelet, Nodes, Pod, Runtime, runc_ids};
use stack::providers::Provider;
use stack::providers::k8s::dataplane::DataPlane;
use stack::providers::k8s::{Kube, KubeSource, ObjectProvider, fake, labels};

fn registry() -> test_support::Registry {
    test_support::Registry::start()
}

/// Why runc cannot run here, or `None`.
fn no_runc() -> Option<&'static str> {
    let there = Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !there {
        return Some("runc is not installed (scripts/test-deps.sh installs it)");
    }
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    (euid != 0).then_some("runc needs root to create the container's namespaces and cgroup")
}

/// The test pod's server, compiled from `data/probe_server.rs` (std only).
fn probe_server(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/probe_server.rs");
    let out = dir.join("probe-server");
    let st = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["-C", "opt-level=1", "-C", "strip=symbols", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("rustc runs");
    assert!(st.success(), "compiling {}", src.display());
    out
}

/// Builds and pushes the pod image answering `version`; returns its reference.
async fn push(reg: &test_support::Registry, bin: &Path, version: &str) -> String {
    let img = oci::server_image(
        oci::minimal_base(bin).unwrap(),
        bin,
        None,
        &[],
        Some(8080),
        BTreeMap::from([("VERSION".to_string(), version.to_string())]),
    )
    .unwrap();
    let digest = oci::Registry::new(&reg.url, None)
        .push("kubelet/probe", version, &img)
        .await
        .unwrap();
    // As `stack up` names it: the repository URL (ECR's, on the local target) and the
    // digest; the kubelet pulls the repository path from the local registry.
    format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/kubelet/probe@{digest}")
}

fn deployment(image: &str, replicas: i32) -> Value {
    deployment_requesting(image, replicas, "100m")
}

fn deployment_requesting(image: &str, replicas: i32, cpu: &str) -> Value {
    let probe = |path: &str, period: i32, failures: i32| {
        json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
               "failureThreshold": failures})
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": "kt", "labels": labels("kt", "probe")},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "probe"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels("kt", "probe")},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "probe", "image": image,
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "env": [{"name": "PORT", "value": "8080"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"},
                                      "requests": {"cpu": cpu, "memory": "32Mi"}},
                        "readinessProbe": probe("/readyz", 1, 1),
                        "livenessProbe": probe("/healthz", 1, 2),
                        "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}
                    }]
                }
            }
        }
    })
}

/// A data plane under `dir` pulling from `reg`, on `nodes`.
fn data_plane(
    dir: &Path,
    reg: &test_support::Registry,
    runtime: Runtime,
    ready_timeout_secs: u64,
    nodes: Option<Nodes>,
) -> DataPlane {
    DataPlane {
        kubelet: Kubelet {
            dir: dir.join("dataplane"),
            registry: Some(reg.url.clone()),
            runtime: Some(runtime),
            ready_timeout: Duration::from_secs(ready_timeout_secs),
        },
        front_port: 0,
        front_exe: env!("CARGO_BIN_EXE_stack").into(),
        nodes,
    }
}

fn pods(dp: &DataPlane) -> Vec<Pod> {
    dp.pods("kt.probe")
}

fn ours(pods: &[Pod]) -> Vec<String> {
    let ids = runc_ids();
    pods.iter()
        .filter(|p| ids.contains(&p.container_id))
        .map(|p| p.container_id.clone())
        .collect()
}

fn listens(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

async fn get(addr: SocketAddr, path: &str) -> String {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_from_the_image_under_runc() {
    if let Some(why) = no_runc() {
        eprintln!("skipped: {why}");
        return;
    }
    scenario(Runtime::Runc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_from_the_image_as_processes_without_runc() {
    scenario(Runtime::Process).await;
}

/// The in-memory Kubernetes API on loopback (alive while the server is held), a
/// client of it, and the provider that applies objects through it.
async fn api() -> (fake::Server, kube::Client, ObjectProvider) {
    let server = fake::FakeApi::new(None)
        .await
        .unwrap()
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let client = server.client().unwrap();
    let p = ObjectProvider::new(Kube::new(KubeSource::Ready(client.clone())), None);
    (server, client, p)
}

/// The test's namespace, labelled as stack `kt`'s.
fn namespace() -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "kt", "labels": labels("kt", "probe")}})
}

/// The probe server built in a new temporary directory and pushed to a new registry as
/// `v1`: the registry, the directory (removed on drop), the server binary and the `v1`
/// image.
async fn probe_image() -> (test_support::Registry, tempfile::TempDir, PathBuf, String) {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let bin = probe_server(tmp.path());
    let v1 = push(&reg, &bin, "v1").await;
    (reg, tmp, bin, v1)
}

/// Pods whose CPU requests do not fit the node group stay Pending, and the
/// Deployment's status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_fit_no_node_stay_pending() {
    let (reg, tmp, _, v1) = probe_image().await;
    let (_server, client, p) = api().await;
    p.create(&namespace()).await.unwrap();
    // One t3.large: 1930m allocatable, room for one 1-CPU pod of the two.
    let d = deployment_requesting(&v1, 2, "1");
    p.create(&d).await.unwrap();
    let dp = data_plane(
        tmp.path(),
        &reg,
        Runtime::Process,
        30,
        Nodes::of("t3.large", 1),
    );
    dp.reconcile(&client, "kt").await.unwrap().expect("front");
    let running = pods(&dp);
    assert_eq!(running.len(), 1);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "kt");
    let st = deps.get("probe").await.unwrap().status.unwrap();
    assert_eq!(
        (st.ready_replicas, st.unavailable_replicas),
        (Some(1), Some(1))
    );
    let cond = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    let msg = cond.message.unwrap_or_default();
    assert!(
        msg.contains("1 pod(s) Pending")
            && msg.contains("Insufficient cpu")
            && msg.contains("1930m"),
        "{msg}"
    );
    // Still no room on the next run; then deleted, nothing is left.
    dp.reconcile(&client, "kt").await.unwrap();
    assert_eq!(pods(&dp), running);
    p.delete("", &d).await.unwrap();
    assert!(dp.reconcile(&client, "kt").await.unwrap().is_none());
    assert!(!listens(running[0].port));
}

async fn scenario(runtime: Runtime) {
    let (reg, tmp, bin, v1) = probe_image().await;

    let (_server, client, p) = api().await;
    p.create(&namespace()).await.unwrap();
    p.create(&deployment(&v1, 2)).await.unwrap();
    let dp = data_plane(tmp.path(), &reg, runtime, 30, Nodes::of("t3.large", 2));

    // Two Ready pods from the image, behind the front; status reported.
    let front = dp.reconcile(&client, "kt").await.unwrap().expect("front");
    let first = pods(&dp);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|p| p.ready && p.runtime == runtime));
    if runtime == Runtime::Runc {
        assert_eq!(ours(&first).len(), 2, "runc runs both");
        let cfg: Value = serde_json::from_slice(
            &std::fs::read(
                dp.kubelet
                    .dir
                    .join("pods")
                    .join(&first[0].name)
                    .join("config.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(cfg["linux"]["resources"]["cpu"]["quota"], 50_000);
    }
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        seen.insert(get(front, "/").await);
    }
    let want: BTreeSet<String> = first.iter().map(|p| format!("v1 {}", p.port)).collect();
    assert_eq!(
        seen, want,
        "the front spreads over both pods, each on its PORT"
    );
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "kt");
    let st = deps.get("probe").await.unwrap().status.unwrap();
    assert_eq!((st.ready_replicas, st.updated_replicas), (Some(2), Some(2)));

    // Nothing changed: the same pods.
    dp.reconcile(&client, "kt").await.unwrap();
    assert_eq!(pods(&dp), first);

    // A failing liveness probe restarts that container, from a fresh root filesystem.
    std::fs::write(
        dp.kubelet
            .dir
            .join("pods")
            .join(&first[0].name)
            .join("rootfs/sick"),
        b"",
    )
    .unwrap();
    dp.reconcile(&client, "kt").await.unwrap();
    let now = pods(&dp);
    let sick = now.iter().find(|p| p.name == first[0].name).unwrap();
    assert_eq!(sick.restarts, 1);
    assert_ne!(sick.pid, first[0].pid);
    assert!(sick.ready);
    assert_eq!(
        now.iter().find(|p| p.name == first[1].name),
        Some(&first[1])
    );

    // A container that exited is restarted too (restartPolicy Always).
    let st = Command::new("kill")
        .args(["-KILL", &first[1].pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    while std::fs::read_to_string(format!("/proc/{}/stat", first[1].pid))
        .is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the pod's process died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    dp.reconcile(&client, "kt").await.unwrap();
    let now = pods(&dp);
    let exited = now.iter().find(|p| p.name == first[1].name).unwrap();
    assert_eq!(exited.restarts, 1);
    assert!(exited.ready && exited.pid != first[1].pid);
    if runtime == Runtime::Runc {
        assert_eq!(
            ours(&now).len(),
            2,
            "the restarted container runs under runc"
        );
    }

    // A new image rolls the pods, new ones Ready before old ones stop: the front
    // answers throughout.
    let v2 = push(&reg, &bin, "v2").await;
    p.update("", &Value::Null, &deployment(&v2, 2))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let poller = {
        let (stop, failures) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let ok = http
                    .get(format!("http://{front}/"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    dp.reconcile(&client, "kt").await.unwrap();
    stop.store(true, Ordering::Relaxed);
    poller.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "the front never failed"
    );
    let rolled = pods(&dp);
    assert_eq!(rolled.len(), 2);
    assert!(rolled.iter().all(|p| p.image == v2 && p.ready));
    assert!(rolled.iter().all(|p| !now.iter().any(|o| o.name == p.name)));
    assert!(now.iter().all(|o| !listens(o.port)), "old ports freed");
    if runtime == Runtime::Runc {
        assert!(ours(&now).is_empty(), "old containers deleted");
    }
    assert!(get(front, "/").await.starts_with("v2 "));

    // Scale to 0: every container stops, the front too.
    p.update("", &Value::Null, &deployment(&v2, 0))
        .await
        .unwrap();
    assert!(dp.reconcile(&client, "kt").await.unwrap().is_none());
    assert!(pods(&dp).is_empty());
    assert!(rolled.iter().all(|o| !listens(o.port)));
    if runtime == Runtime::Runc {
        assert!(ours(&rolled).is_empty());
    }

    // Back to one, then deleted (`stack down`): nothing left.
    p.update("", &Value::Null, &deployment(&v2, 1))
        .await
        .unwrap();
    dp.reconcile(&client, "kt").await.unwrap().expect("front");
    let last = pods(&dp);
    assert_eq!(last.len(), 1);
    p.delete("", &deployment(&v2, 1)).await.unwrap();
    assert!(dp.reconcile(&client, "kt").await.unwrap().is_none());
    assert!(!listens(last[0].port));
    assert!(!dp.kubelet.dir.join("kt.probe.json").exists());
    if runtime == Runtime::Runc {
        assert!(ours(&last).is_empty());
    }
    assert!(
        !dp.kubelet.dir.join("pods").join(&last[0].name).exists(),
        "bundle removed"
    );
}

/// The real thing, where a `sentiment-server` built from this tree and a model are
/// named (`STACK_E2E_SERVER_BIN`, `STACK_E2E_MODEL_DIR`, e.g. the tiny fixture of
/// `model-cache fixture --size tiny`): the server image with the model baked in, run
/// by the kubelet from the stack's own Deployment manifest (PORT, MODEL_DIR, probes,
/// preStop, limits), answers `/predict` through the front; deleted, nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_image_serves_from_the_manifest() {
    let (Ok(bin), Ok(model)) = (
        std::env::var("STACK_E2E_SERVER_BIN"),
        std::env::var("STACK_E2E_MODEL_DIR"),
    ) else {
        eprintln!("skipped: set STACK_E2E_SERVER_BIN and STACK_E2E_MODEL_DIR to run it");
        return;
    };
    let runtime = if no_runc().is_none() {
        Runtime::Runc
    } else {
        Runtime::Process
    };
    let reg = registry();
    let host = reg.url.trim_start_matches("http://").to_string();
    let c = stack::config::K8sConfig {
        namespace: "kt".into(),
        ..Default::default()
    };
    let img = stack::artifacts::image::ServerImage::new(
        format!("{host}/kt/server").into(),
        &bin,
        u16::try_from(c.port).unwrap(),
        c.model_env.clone(),
    )
    .unwrap()
    .with_model(Some(&model))
    .unwrap()
    .build()
    .await
    .unwrap();
    let digest = oci::Registry::new(&reg.url, None)
        .push("kt/server", "latest", &img)
        .await
        .unwrap();
    let image = format!("{host}/kt/server@{digest}");
    let (_server, client, p) = api().await;
    p.create(&stack::app::k8s::namespace("kt", &c))
        .await
        .unwrap();
    let mut d = stack::app::k8s::deployment("kt", &c, &stack::engine::Input::Value(image));
    // The manifest leaves the count to the HPA; set it as the HPA would.
    d["spec"]["replicas"] = json!(2);
    p.create(&d).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Two CPUs requested: a node type they fit.
    let dp = data_plane(tmp.path(), &reg, runtime, 120, Nodes::of("t3.xlarge", 2));
    let front = dp.reconcile(&client, "kt").await.unwrap().expect("front");
    let running = dp.pods("kt.sentiment-server");
    assert_eq!(running.len(), 2);
    let r = reqwest::Client::new()
        .post(format!("http://{front}/predict"))
        .json(&json!({"text": "a wonderful film"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    assert!(body.contains("label"), "{body}");
    p.delete("", &d).await.unwrap();
    assert!(dp.reconcile(&client, "kt").await.unwrap().is_none());
    assert!(running.iter().all(|p| !listens(p.port)));
    if runtime == Runtime::Runc {
        assert!(ours(&running).is_empty());
    }
}
