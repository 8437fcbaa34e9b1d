//! The local data plane: one server process per replica behind a front, following
//! the Deployment in the in-memory API (scale up, scale down, delete).

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use stack::app::k8s as manifests;
use stack::config::K8sConfig;
use stack::engine::Input;
use stack::providers::Provider;
use stack::providers::k8s::dataplane::{DataPlane, Replica};
use stack::providers::k8s::{Kube, KubeSource, ObjectProvider, fake};

fn running(dp: &DataPlane) -> Vec<Replica> {
    std::fs::read_to_string(dp.dir.join("ml.sentiment-server.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
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
async fn processes_follow_replicas_and_stop_on_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("server.py");
    std::fs::write(&script, include_str!("data/fake_server.py")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let server = fake::FakeApi::new(None)
        .await
        .unwrap()
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let client = server.client().unwrap();
    let p = ObjectProvider::new(Kube::new(KubeSource::Ready(client.clone())), None);
    let c = K8sConfig {
        namespace: "ml".into(),
        ..K8sConfig::default()
    };
    let img = Input::Value("local".to_string());
    p.create(&manifests::namespace("dp", &c)).await.unwrap();
    p.create(&manifests::deployment("dp", &c, &img))
        .await
        .unwrap();

    let dp = DataPlane {
        dir: tmp.path().join("dataplane"),
        binary: script.clone(),
        model_dir: tmp.path().display().to_string(),
        front_port: 0,
        front_exe: env!("CARGO_BIN_EXE_stack").into(),
        ready_timeout: Duration::from_secs(30),
    };

    // Two replicas: two processes, both behind the front, status reported.
    let front = dp.reconcile(&client, "dp").await.unwrap().expect("front");
    let rs = running(&dp);
    assert_eq!(rs.len(), 2);
    assert!(rs.iter().all(|r| alive(r.pid)));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(get(front, "/").await);
    }
    assert_eq!(seen.len(), 2, "the front spreads over both: {seen:?}");
    assert_eq!(get(front, "/readyz").await, "ok");
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "ml");
    let st = deps.get("sentiment-server").await.unwrap().status.unwrap();
    assert_eq!(st.available_replicas, Some(2));
    // Nothing changed: the same processes keep running.
    dp.reconcile(&client, "dp").await.unwrap();
    assert_eq!(running(&dp), rs);

    // Scale down to one: the surplus process stops.
    let one = K8sConfig {
        replicas: 1,
        ..c.clone()
    };
    p.update(
        "",
        &serde_json::Value::Null,
        &manifests::deployment("dp", &one, &img),
    )
    .await
    .unwrap();
    dp.reconcile(&client, "dp").await.unwrap();
    let now = running(&dp);
    assert_eq!(now.len(), 1);
    assert_eq!(rs.iter().filter(|r| alive(r.pid)).count(), 1);
    assert_eq!(get(front, "/readyz").await, "ok");

    // Deleted (stack down): every process and the front stop.
    p.delete("", &manifests::deployment("dp", &one, &img))
        .await
        .unwrap();
    assert!(dp.reconcile(&client, "dp").await.unwrap().is_none());
    assert!(rs.iter().all(|r| !alive(r.pid)));
    assert!(!now.iter().any(|r| alive(r.pid)));
}
