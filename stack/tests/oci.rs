//! OCI image build, push and pull against a local `docker-registry` the test starts.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stack::artifacts::oci;

struct RegistryProc {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for RegistryProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry() -> RegistryProc {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .args(["serve", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry must be installed (scripts/test-deps.sh installs it)");
    let r = RegistryProc {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

#[test]
fn layers_are_reproducible() {
    let f = oci::LayerFile {
        dest: "/app/x".into(),
        data: b"hello".to_vec(),
        mode: 0o755,
    };
    let a = oci::layer(std::slice::from_ref(&f)).unwrap();
    let b = oci::layer(&[f]).unwrap();
    assert_eq!(a.blob.digest, b.blob.digest);
    assert_eq!(a.diff_id, b.diff_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_push_pull_round_trip_runs_the_binary() {
    let reg = registry();
    let bin = Path::new(env!("CARGO_BIN_EXE_stack"));
    let base = oci::minimal_base(bin).unwrap();
    let env = BTreeMap::from([("MODEL_DIR".to_string(), "/models".to_string())]);
    let img = oci::server_image(base, bin, None, &[], Some(8080), env).unwrap();

    // The config says how to run it: entrypoint, env, port, non-root user.
    let cfg: serde_json::Value = serde_json::from_slice(&img.config.data).unwrap();
    assert_eq!(cfg["config"]["Entrypoint"][0], "/app/stack");
    assert_eq!(cfg["config"]["User"], oci::NONROOT);
    assert!(cfg["config"]["ExposedPorts"].get("8080/tcp").is_some());
    assert_eq!(cfg["config"]["Env"][0], "MODEL_DIR=/models");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);

    let r = oci::Registry::new(&reg.url, None);
    let pushed = r.push("sentiment/server", "v1", &img).await.unwrap();
    assert_eq!(pushed, img.digest());
    // Pushing again uploads nothing new and gives the same digest.
    assert_eq!(
        r.push("sentiment/server", "v1", &img).await.unwrap(),
        pushed
    );

    let (digest, config, layers) = r.pull("sentiment/server", &pushed).await.unwrap();
    assert_eq!(digest, pushed);
    assert_eq!(config.digest, img.config.digest);
    let want: Vec<&str> = img.layers.iter().map(|l| l.blob.digest.as_str()).collect();
    let got: Vec<&str> = layers.iter().map(|b| b.digest.as_str()).collect();
    assert_eq!(got, want);
    let (by_tag, _, _) = r.pull("sentiment/server", "v1").await.unwrap();
    assert_eq!(by_tag, pushed);

    // The binary from the pulled layers runs.
    let data = oci::extract(&layers, "/app/stack")
        .unwrap()
        .expect("binary in layers");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("stack");
    std::fs::write(&exe, data).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&exe).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("stack "));
    // The base layer names the non-root user.
    let passwd = oci::extract(&layers[..1], "/etc/passwd").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&passwd).contains(":65532:65532:"));
}
