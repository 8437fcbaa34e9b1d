//! S3 model delivery: `bootstrap` fetches the checkpoint from a moto S3 server (started
//! by this test on a free loopback port) into /tmp during init, and a later init in the
//! same sandbox reuses the fetched copy.

mod common;

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use lambda_emulator::EmulatorConfig;
use test_support::Moto;

/// The function configured for `uri` on this moto, fetching into `cache_dir`.
fn function_config(moto: &Moto, uri: &str, cache_dir: &Path) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(env!("CARGO_BIN_EXE_bootstrap"));
    config.env = [
        ("MODEL_DIR", ""),
        ("MODEL_S3_URI", uri),
        ("MODEL_S3_CACHE_DIR", cache_dir.to_str().unwrap()),
        ("MODEL_THREADS", "1"),
        ("AWS_ENDPOINT_URL", moto.url.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("RUST_LOG", "warn"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    config
}

fn client(url: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_is_fetched_from_s3_into_tmp_and_reused_by_the_next_init() {
    let moto = Moto::start();
    let s3 = client(&moto.url);
    s3.create_bucket()
        .bucket("models")
        .send()
        .await
        .expect("bucket");
    let mut uploaded = Vec::new();
    for entry in std::fs::read_dir(common::tiny_model()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let body = aws_sdk_s3::primitives::ByteStream::from(std::fs::read(&path).unwrap());
        let key = format!("tiny/v1/{name}");
        s3.put_object()
            .bucket("models")
            .key(&key)
            .body(body)
            .send()
            .await
            .expect("put");
        uploaded.push(key);
    }

    let tmp = tempfile::tempdir().unwrap();
    let mut config = function_config(&moto, "s3://models/tiny/v1/", tmp.path());
    config.keep_alive = Duration::from_millis(200);
    let emulator = common::start(config).await;
    let ask = || common::predict(&emulator, r#"{"text": "fetched from S3"}"#);

    let first = ask().await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-lambda-cold"), Some("true"));
    let local = tmp.path().join("s3--models").join("tiny--v1");
    assert!(
        local.join("model.safetensors").is_file(),
        "nothing in {}",
        local.display()
    );

    // Remove the objects: the next cold start can only succeed from the /tmp copy.
    for key in uploaded {
        s3.delete_object()
            .bucket("models")
            .key(key)
            .send()
            .await
            .expect("delete");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        emulator.instances(),
        (0, 0),
        "the first instance was reaped"
    );
    let second = ask().await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.header("x-lambda-cold"), Some("true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_s3_object_is_an_init_error_naming_the_key() {
    let moto = Moto::start();
    client(&moto.url)
        .create_bucket()
        .bucket("empty")
        .send()
        .await
        .expect("bucket");
    let tmp = tempfile::tempdir().unwrap();
    let config = function_config(&moto, "s3://empty/none", tmp.path());
    let emulator = common::start(config).await;
    let reply = common::predict(&emulator, r#"{"text": "x"}"#).await;
    // API Gateway's body hides the cause; the emulator's header carries it.
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(
        reply.header("x-lambda-error-type"),
        Some("Runtime.InitError")
    );
    let detail = reply.header("x-lambda-error").unwrap();
    assert!(detail.contains("s3://empty/none/"), "{detail}");
}
