//! OCI image build, push and pull against a local `docker-registry` the test starts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::json;
use stack::artifacts::image::{ImageProvider, Push};
use stack::artifacts::{bundle, oci};
use stack::providers::Provider;

fn registry() -> test_support::Registry {
    test_support::Registry::start()
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

    // What the image provider's read checks: the registry still holds the digest.
    assert!(r.has_manifest("sentiment/server", &pushed).await.unwrap());
    let other = format!("sha256:{}", "0".repeat(64));
    assert!(!r.has_manifest("sentiment/server", &other).await.unwrap());
    assert!(!r.has_manifest("sentiment/nothing", &pushed).await.unwrap());
    let provider = ImageProvider(Push::Registry(reg.url.clone()));
    let host = reg.url.trim_start_matches("http://");
    let read = |digest: String| {
        let id = format!("{host}/sentiment/server@{digest}");
        let p = &provider;
        async move {
            p.read(Some(&id), &json!({}), Some(&json!({})))
                .await
                .unwrap()
        }
    };
    assert!(read(pushed.clone()).await.is_some(), "pushed: read back");
    assert!(
        read(other).await.is_none(),
        "gone from the registry: pushed again"
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

/// A base image pushed as an OCI index: a manifest for this machine's architecture
/// (a layer with `/etc/os-release`, env `BASE_VAR=1`, `PATH`) and one for another.
/// Returns the base's layer digest for this architecture.
async fn push_base_index(url: &str) -> String {
    let r = oci::Registry::new(url, None);
    let mk = |arch: &str, text: &str| {
        let l = oci::layer(&[oci::LayerFile {
            dest: "/etc/os-release".into(),
            data: text.as_bytes().to_vec(),
            mode: 0o644,
        }])
        .unwrap();
        oci::Image::new(
            vec![l],
            &oci::ImageConfig {
                entrypoint: vec!["/bin/sh".into()],
                env: BTreeMap::from([
                    ("BASE_VAR".to_string(), "1".to_string()),
                    ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ]),
                port: None,
                user: "0:0".into(),
                architecture: arch.into(),
            },
        )
    };
    let other = if oci::host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let mine = mk(oci::host_arch(), "ID=testbase\n");
    let theirs = mk(other, "ID=otherarch\n");
    r.push("base", "mine", &mine).await.unwrap();
    r.push("base", "theirs", &theirs).await.unwrap();
    let entry = |img: &oci::Image, arch: &str| {
        serde_json::json!({
            "mediaType": oci::MANIFEST_TYPE,
            "digest": img.digest(),
            "size": img.manifest.data.len(),
            "platform": { "os": "linux", "architecture": arch }
        })
    };
    // The other architecture first: picking the first entry would be wrong.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&theirs, other), entry(&mine, oci::host_arch())]
    });
    let put = reqwest::Client::new()
        .put(format!("{url}/v2/base/manifests/multi"))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index.to_string())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{:?}", put.text().await);
    mine.layers[0].blob.digest.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_built_on_a_pulled_base_image() {
    let reg = registry();
    let base_layer = push_base_index(&reg.url).await;
    let host = reg.url.trim_start_matches("http://");
    let bin = env!("CARGO_BIN_EXE_stack");
    let env = BTreeMap::from([("MODEL_DIR".to_string(), "/models".to_string())]);
    let img = stack::artifacts::image::ServerImage::new(
        format!("{host}/sentiment/server").into(),
        bin,
        8080,
        env,
    )
    .unwrap()
    .on_base(Some(format!("{host}/base:multi")));
    let built = img.build().await.unwrap();

    // The base's layer (this architecture's, from the index) comes first, then ours.
    assert_eq!(built.layers.len(), 2);
    assert_eq!(built.layers[0].blob.digest, base_layer);
    let cfg: serde_json::Value = serde_json::from_slice(&built.config.data).unwrap();
    let envs: Vec<&str> = cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(envs.contains(&"BASE_VAR=1"), "{envs:?}");
    assert!(envs.contains(&"PATH=/usr/bin:/bin"), "{envs:?}");
    assert!(envs.contains(&"MODEL_DIR=/models"), "{envs:?}");
    assert_eq!(cfg["config"]["Entrypoint"][0], "/app/stack");
    assert_eq!(cfg["config"]["User"], oci::NONROOT);
    assert_eq!(cfg["architecture"], oci::host_arch());
    assert_eq!(cfg["history"].as_array().unwrap().len(), 2);

    // Push, pull back: same digests, base layers included, both layers' files there.
    let r = oci::Registry::new(&reg.url, None);
    let pushed = r.push("sentiment/server", "v1", &built).await.unwrap();
    assert_eq!(pushed, built.digest());
    let (digest, config, layers) = r.pull("sentiment/server", &pushed).await.unwrap();
    assert_eq!(digest, pushed);
    assert_eq!(config.digest, built.config.digest);
    let got: Vec<&str> = layers.iter().map(|b| b.digest.as_str()).collect();
    let want: Vec<&str> = built
        .layers
        .iter()
        .map(|l| l.blob.digest.as_str())
        .collect();
    assert_eq!(got, want);
    assert!(got.contains(&base_layer.as_str()));
    let os = oci::extract(&layers, "/etc/os-release").unwrap().unwrap();
    assert_eq!(os, b"ID=testbase\n");
    assert!(oci::extract(&layers, "/app/stack").unwrap().is_some());

    // Deterministic: building again on the same base gives the same image.
    assert_eq!(img.build().await.unwrap().digest(), built.digest());
}

/// A front for the registry that wants a bearer token, as Docker Hub and public ECR
/// do: 401 with a `WWW-Authenticate: Bearer` challenge, a token endpoint that checks
/// `service` and `scope`, then the registry's answers passed through.
fn token_front(upstream: &str) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let me = format!("http://{}", l.local_addr().unwrap());
    let up = upstream.trim_start_matches("http://").to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (me2, log2) = (me.clone(), log.clone());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                head.push(h.trim_end().to_string());
            }
            let first = head.first().cloned().unwrap_or_default();
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            log2.lock().unwrap().push(path.clone());
            let authed = head
                .iter()
                .any(|h| h.eq_ignore_ascii_case("authorization: Bearer t0k3n"));
            if path.starts_with("/token?") {
                let ok = path.contains("service=stub-registry")
                    && path.contains("scope=repository%3Abase%3Apull");
                let body = if ok { r#"{"token":"t0k3n"}"# } else { "{}" };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            } else if !authed {
                let _ = write!(
                    conn,
                    "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"{me2}/token\",service=\"stub-registry\",scope=\"repository:base:pull\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            } else {
                // Pass the request through (GETs only), without keep-alive.
                let mut u = std::net::TcpStream::connect(&up).unwrap();
                let mut req = format!("{first}\r\nHost: {up}\r\nConnection: close\r\n");
                for h in head.iter().skip(1) {
                    let l = h.to_ascii_lowercase();
                    if !(l.starts_with("host:") || l.starts_with("connection:")) {
                        req.push_str(h);
                        req.push_str("\r\n");
                    }
                }
                req.push_str("\r\n");
                u.write_all(req.as_bytes()).unwrap();
                let mut answer = Vec::new();
                u.read_to_end(&mut answer).unwrap();
                let _ = conn.write_all(&answer);
            }
        }
    });
    (me, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_image_pulled_through_the_bearer_token_flow() {
    let reg = registry();
    let base_layer = push_base_index(&reg.url).await;
    let (front, log) = token_front(&reg.url);
    let r = oci::ImageRef::parse(&format!(
        "{}/base:multi",
        front.trim_start_matches("http://")
    ))
    .unwrap();
    assert_eq!(r.base, front);
    let base = oci::pull_base_ref(&format!(
        "{}/base:multi",
        front.trim_start_matches("http://")
    ))
    .await
    .unwrap();
    assert_eq!(base.layers.len(), 1);
    assert_eq!(base.layers[0].blob.digest, base_layer);
    let log = log.lock().unwrap();
    // One challenge, one token, then everything with the token.
    assert_eq!(
        log.iter().filter(|p| p.starts_with("/token?")).count(),
        1,
        "{log:?}"
    );
}

#[test]
fn image_references_parse() {
    let r = oci::ImageRef::parse("public.ecr.aws/docker/library/debian:bookworm-slim").unwrap();
    assert_eq!(
        (r.base.as_str(), r.repo.as_str(), r.reference.as_str()),
        (
            "https://public.ecr.aws",
            "docker/library/debian",
            "bookworm-slim"
        )
    );
    let r = oci::ImageRef::parse("debian").unwrap();
    assert_eq!(
        (r.base.as_str(), r.repo.as_str(), r.reference.as_str()),
        ("https://registry-1.docker.io", "library/debian", "latest")
    );
    let r = oci::ImageRef::parse("127.0.0.1:5001/a/b@sha256:abc").unwrap();
    assert_eq!(
        (r.base.as_str(), r.repo.as_str(), r.reference.as_str()),
        ("http://127.0.0.1:5001", "a/b", "sha256:abc")
    );
    let r = oci::ImageRef::parse("http://reg.internal:80/x:1").unwrap();
    assert_eq!(r.base, "http://reg.internal:80");
    assert!(oci::ImageRef::parse("ftp://x/y").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_image_runs_bootstrap_with_the_model_in_it() {
    let reg = registry();
    let model = tempfile::tempdir().unwrap();
    std::fs::write(model.path().join("config.json"), b"{\"dim\": 8}").unwrap();
    std::fs::write(model.path().join("model.safetensors"), b"weights").unwrap();
    // Any executable stands in for bootstrap: the layout is what is tested.
    let bin = env!("CARGO_BIN_EXE_stack");
    let host = reg.url.trim_start_matches("http://");
    // Declares the image of the model as it is on disk now.
    let declare = || {
        stack::artifacts::image::ServerImage::lambda(
            format!("{host}/sentiment/lambda").into(),
            bin,
            Some(model.path().to_str().unwrap()),
            BTreeMap::new(),
        )
        .unwrap()
    };
    let img = declare();
    let built = img.build().await.unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&built.config.data).unwrap();
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(["/var/runtime/bootstrap"])
    );
    assert_eq!(
        cfg["config"]["Env"],
        serde_json::json!(["MODEL_DIR=/opt/model"])
    );
    assert!(cfg["config"].get("ExposedPorts").is_none());

    let r = oci::Registry::new(&reg.url, None);
    let pushed = r.push("sentiment/lambda", "v1", &built).await.unwrap();
    let (digest, _, layers) = r.pull("sentiment/lambda", &pushed).await.unwrap();
    assert_eq!(digest, built.digest());
    let boot = oci::extract(&layers, "/var/runtime/bootstrap")
        .unwrap()
        .unwrap();
    assert_eq!(boot, std::fs::read(bin).unwrap());
    let conf = oci::extract(&layers, "/opt/model/config.json")
        .unwrap()
        .unwrap();
    assert_eq!(conf, b"{\"dim\": 8}");

    // A changed model is a changed declaration (and image).
    let before = serde_json::to_value(&img).unwrap();
    std::fs::write(model.path().join("config.json"), b"{\"dim\": 9}").unwrap();
    let img2 = declare();
    assert_ne!(
        before["model_sha256"],
        serde_json::to_value(&img2).unwrap()["model_sha256"]
    );
    assert_ne!(img2.build().await.unwrap().digest(), built.digest());
}

/// The image a local kubelet would run: unpacked into a bundle and run by `runc` with
/// the runtime config built from its image config. Needs runc and root; skipped (with
/// the reason printed) without them.
#[test]
fn image_unpacked_into_a_bundle_runs_under_runc() {
    let runc_there = Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runc_there {
        eprintln!("skipped: runc is not installed (scripts/test-deps.sh installs it)");
        return;
    }
    // /proc/self belongs to the process's effective uid.
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    if euid != 0 {
        eprintln!("skipped: runc needs root to create the container's namespaces and cgroup");
        return;
    }
    let echo = Path::new("/bin/echo");
    let img = oci::server_image(
        oci::minimal_base(echo).unwrap(),
        echo,
        None,
        &["hello from runc".to_string()],
        None,
        BTreeMap::new(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    bundle::unpack(img.layers.iter().map(|l| &l.blob), &rootfs).unwrap();
    let config: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&img.config.data).unwrap();
    let spec = bundle::runtime_spec(
        &config,
        &rootfs,
        &bundle::RunOptions {
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    bundle::write_config(dir.path(), &spec).unwrap();
    let id = format!("stack-oci-test-{}", std::process::id());
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(dir.path())
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .output();
    assert!(
        out.status.success(),
        "runc run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from runc\n");
}
