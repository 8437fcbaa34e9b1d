//! The deployment zip as `scripts/package-lambda.sh` makes it (`bootstrap` + the model
//! as `model/` beside it), unpacked like Lambda unpacks it into `/var/task`, runs under
//! the emulator on the bundled-model route (no `MODEL_DIR`, no `MODEL_S3_URI`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lambda_emulator::EmulatorConfig;

fn package(model: &Path, out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let st = Command::new("bash")
        .arg(root.join("scripts/package-lambda.sh"))
        .arg(model)
        .current_dir(&root)
        .env("LAMBDA_BUILD", "none")
        .env("LAMBDA_BOOTSTRAP", env!("CARGO_BIN_EXE_bootstrap"))
        .env("LAMBDA_OUT", out)
        .status()
        .expect("bash runs scripts/package-lambda.sh");
    assert!(st.success(), "package-lambda.sh failed: {st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packaged_zip_runs_under_the_emulator_with_the_bundled_model() {
    let tmp = tempfile::tempdir().unwrap();
    let zip = tmp.path().join("sentiment.zip");
    package(common::tiny_model(), &zip);

    // Unzip as Lambda does: the modes recorded in the zip are the files' modes.
    let task = tmp.path().join("task");
    let st = Command::new("unzip")
        .args(["-q", "-o"])
        .arg(&zip)
        .arg("-d")
        .arg(&task)
        .status()
        .expect("unzip is installed");
    assert!(st.success());
    let bootstrap = task.join("bootstrap");
    let mode = std::fs::metadata(&bootstrap).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "bootstrap must be executable in the zip"
    );
    assert!(task.join("model/config.json").is_file());
    assert!(task.join("model/model.safetensors").is_file());

    let mut config = EmulatorConfig::new(&bootstrap);
    // The bundled route: nothing points elsewhere (empty values count as unset).
    config.env = vec![
        ("MODEL_DIR".into(), String::new()),
        ("MODEL_S3_URI".into(), String::new()),
        ("MODEL_THREADS".into(), "1".into()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    config.timeout = Duration::from_secs(20);
    let emulator = common::start(config).await;
    let reply = common::predict(&emulator, r#"{"text": "a wonderful film"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let label = reply.json()["label"].as_str().map(str::to_string);
    assert!(
        matches!(label.as_deref(), Some("POSITIVE" | "NEGATIVE")),
        "{}",
        reply.body
    );
    assert_eq!(reply.header("x-lambda-cold"), Some("true"));

    // Without the model beside it, the same bootstrap fails at init: the model above
    // really came from the zip.
    std::fs::remove_dir_all(task.join("model")).unwrap();
    let mut config = EmulatorConfig::new(&bootstrap);
    config.env = vec![
        ("MODEL_DIR".into(), String::new()),
        ("MODEL_S3_URI".into(), String::new()),
    ];
    let emulator = common::start(config).await;
    let reply = common::predict(&emulator, r#"{"text": "x"}"#).await;
    assert_eq!(reply.status, 500, "{}", reply.body);
}
