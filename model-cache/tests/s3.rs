//! The S3 stage of `ModelSource` against a moto S3 server this test starts on a free
//! loopback port (`moto_server`, installed by `scripts/test-deps.sh`): fetch into the
//! cache, reuse without S3, verification against an uploaded manifest and against S3's
//! own checksum, repair of a corrupted cached file, errors that name bucket and key.
//! Compiled only with the `s3` feature (`[[test]] required-features`), which workspace
//! builds turn on through sentiment-lambda.
#![cfg(feature = "s3")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use base64::Engine;
use model_cache::fixture::{FixtureDtype, FixtureSize};
use model_cache::source::S3Location;
use model_cache::{Checkpoint, ModelSource, SourceError};
use sha2::Digest;

/// Signed-looking requests: moto refuses anonymous object reads and writes, but does
/// not check signatures.
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=0";

/// Credentials and region for the SDK, set once before any test reads the environment
/// (every test passes through here first, so no thread reads it while it is written).
fn aws_env() {
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        for (key, value) in [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            // SAFETY: see above; the other test threads wait on this Once.
            unsafe { std::env::set_var(key, value) };
        }
    });
}

/// The shared moto_server plus this test's S3 helpers over its REST API.
struct Moto {
    _server: test_support::Moto,
    url: String,
}

impl Moto {
    fn start() -> Self {
        aws_env();
        let server = test_support::Moto::start();
        Self {
            url: server.url.clone(),
            _server: server,
        }
    }

    /// A server with a tiny fixture of `dtype` uploaded under `models/<prefix>`; the
    /// fixture's directory comes with it.
    fn with_model(prefix: &str, dtype: FixtureDtype) -> (Self, tempfile::TempDir) {
        let moto = Self::start();
        let fixture = common::fixture(FixtureSize::Tiny, dtype);
        moto.create_bucket("models");
        moto.upload_dir("models", prefix, fixture.path());
        (moto, fixture)
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        ureq::request(method, &format!("{}/{path}", self.url)).set("authorization", AUTH)
    }

    fn create_bucket(&self, bucket: &str) {
        self.request("PUT", bucket).call().expect("create bucket");
    }

    /// Uploads `bytes`; `checksum` is stored as the object's SHA-256 checksum (moto
    /// keeps what it is given, so a wrong one stands for corruption in S3).
    fn put(&self, bucket: &str, key: &str, bytes: &[u8], checksum: Option<[u8; 32]>) {
        let mut request = self
            .request("PUT", &format!("{bucket}/{key}"))
            .set("content-type", "application/octet-stream");
        if let Some(sum) = checksum {
            request = request.set("x-amz-sdk-checksum-algorithm", "SHA256").set(
                "x-amz-checksum-sha256",
                &base64::engine::general_purpose::STANDARD.encode(sum),
            );
        }
        request.send_bytes(bytes).expect("put object");
    }

    fn delete(&self, bucket: &str, key: &str) {
        self.request("DELETE", &format!("{bucket}/{key}"))
            .call()
            .expect("delete object");
    }

    /// Uploads every file of `dir` under `prefix`; returns the keys.
    fn upload_dir(&self, bucket: &str, prefix: &str, dir: &Path) -> Vec<String> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let key = format!("{prefix}/{name}");
            self.put(bucket, &key, &std::fs::read(&path).unwrap(), None);
            keys.push(key);
        }
        keys
    }

    /// Resolves `uri` into `cache`; it must succeed.
    fn resolve(&self, uri: &str, cache: &Path) -> Checkpoint {
        let r = self.source(uri, cache).resolve();
        r.unwrap_or_else(|e| panic!("resolve {uri}: {e}"))
    }

    /// Resolves `uri` into `cache`; it must fail.
    fn resolve_err(&self, uri: &str, cache: &Path) -> SourceError {
        self.source(uri, cache).resolve().unwrap_err()
    }

    fn source(&self, uri: &str, cache: &Path) -> ModelSource {
        ModelSource {
            model_dir: None,
            model_id: "unused/for-s3".into(),
            revision: "unused".into(),
            cache_dir: cache.to_path_buf(),
            hub_endpoint: None,
            offline: false,
            s3: Some(S3Location::parse(uri).unwrap()),
            s3_endpoint: Some(self.url.clone()),
        }
    }
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

#[test]
fn fetches_into_the_cache_verifies_and_reuses_the_copy_without_s3() {
    let moto = Moto::start();
    let fixture = common::fixture(FixtureSize::Tiny, FixtureDtype::F16);
    moto.create_bucket("models");
    let keys = moto.upload_dir("models", "tiny/v1", fixture.path());
    let cache = tempfile::tempdir().unwrap();

    let checkpoint = moto.resolve("s3://models/tiny/v1/", cache.path());
    assert_eq!(
        checkpoint.dir(),
        cache.path().join("s3--models").join("tiny--v1")
    );
    common::assert_cached_copy(
        checkpoint.dir(),
        fixture.path(),
        &["config.json", "model.safetensors", "tokenizer.json"],
    );
    // Nothing half-written is left beside the entry.
    let leftovers: Vec<_> = std::fs::read_dir(cache.path().join("s3--models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".download"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // With the objects gone, the next resolve can only succeed from the verified copy.
    for key in keys {
        moto.delete("models", &key);
    }
    let again = moto.resolve("s3://models/tiny/v1", cache.path());
    assert_eq!(again.dir(), checkpoint.dir());
    let classifier = model_cache::Classifier::load(&again, &Default::default()).unwrap();
    assert_eq!(classifier.classify(&["from s3"]).unwrap().len(), 1);
}

#[test]
fn a_corrupted_cached_file_is_fetched_again_and_only_that_file() {
    let (moto, fixture) = Moto::with_model("m", FixtureDtype::F32);
    let cache = tempfile::tempdir().unwrap();
    let checkpoint = moto.resolve("s3://models/m", cache.path());
    let weights = checkpoint.dir().join("model.safetensors");
    let config_mtime = std::fs::metadata(checkpoint.dir().join("config.json"))
        .unwrap()
        .modified()
        .unwrap();

    // Same size, one byte flipped: only the hash can tell.
    let mut bytes = read(weights.clone());
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&weights, &bytes).unwrap();

    let repaired = moto.resolve("s3://models/m", cache.path());
    assert_eq!(
        read(repaired.dir().join("model.safetensors")),
        read(fixture.path().join("model.safetensors"))
    );
    assert_eq!(
        std::fs::metadata(repaired.dir().join("config.json"))
            .unwrap()
            .modified()
            .unwrap(),
        config_mtime,
        "intact files are not fetched again"
    );
}

#[test]
fn an_uploaded_manifest_is_checked_file_by_file() {
    let moto = Moto::start();
    let fixture = common::fixture(FixtureSize::Tiny, FixtureDtype::F32);
    // `model-cache manifest DIR` before uploading: every file then has a known sha256.
    model_cache::source::write_checkpoint_manifest(fixture.path()).unwrap();
    moto.create_bucket("models");
    moto.upload_dir("models", "good", fixture.path());
    let cache = tempfile::tempdir().unwrap();
    let good = moto.resolve("s3://models/good", cache.path());
    assert_eq!(
        read(good.dir().join("model.safetensors")),
        read(fixture.path().join("model.safetensors"))
    );

    // The weights in S3 differ from what the manifest says (same size, one byte).
    let mut weights = read(fixture.path().join("model.safetensors"));
    moto.upload_dir("models", "bad", fixture.path());
    weights[100] ^= 0x01;
    moto.put("models", "bad/model.safetensors", &weights, None);
    let err = moto.resolve_err("s3://models/bad", cache.path());
    let text = err.to_string();
    assert!(matches!(err, SourceError::S3 { .. }), "{text}");
    common::assert_mentions(
        &text,
        &[
            "s3://models/bad/model.safetensors",
            "corrupt: sha256",
            "manifest.json says",
        ],
    );
    let entry = cache.path().join("s3--models").join("bad");
    assert!(
        !entry.join("manifest.json").exists() && !entry.join("model.safetensors").exists(),
        "a file that failed verification must not be installed"
    );
}

#[test]
fn an_object_whose_s3_checksum_does_not_match_is_refused() {
    let (moto, fixture) = Moto::with_model("sum", FixtureDtype::F32);
    let weights = read(fixture.path().join("model.safetensors"));
    // First with the right checksum: accepted.
    moto.put(
        "models",
        "sum/model.safetensors",
        &weights,
        Some(sha256(&weights)),
    );
    let cache = tempfile::tempdir().unwrap();
    moto.resolve("s3://models/sum", cache.path());

    // Then the stored checksum disagrees with the bytes.
    moto.put(
        "models",
        "sum/model.safetensors",
        &weights,
        Some(sha256(b"something else")),
    );
    let cache = tempfile::tempdir().unwrap();
    let text = moto
        .resolve_err("s3://models/sum", cache.path())
        .to_string();
    common::assert_mentions(&text, &["s3://models/sum/model.safetensors", "checksum"]);
}

#[test]
fn missing_objects_and_buckets_are_named() {
    let moto = Moto::start();
    moto.create_bucket("empty");
    let cache = tempfile::tempdir().unwrap();
    let text = moto
        .resolve_err("s3://empty/none", cache.path())
        .to_string();
    // Files are fetched concurrently: whichever missing key fails first is named.
    assert!(
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt"
        ]
        .iter()
        .any(|f| text.contains(&format!("s3://empty/none/{f}")))
            && text.contains("NoSuchKey"),
        "{text}"
    );

    let text = moto
        .resolve_err("s3://no-such-bucket/x", cache.path())
        .to_string();
    common::assert_mentions(&text, &["s3://no-such-bucket/x/", "NoSuchBucket"]);

    // Offline never contacts S3 and says where it looked.
    let mut offline = moto.source("s3://empty/none", cache.path());
    offline.offline = true;
    let text = offline.resolve().unwrap_err().to_string();
    common::assert_mentions(&text, &["S3 s3://empty/none/", "offline"]);
}

#[test]
fn concurrent_resolves_all_see_whole_files() {
    let (moto, fixture) = Moto::with_model("c", FixtureDtype::Bf16);
    let cache = tempfile::tempdir().unwrap();
    let expected = read(fixture.path().join("model.safetensors"));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| moto.source("s3://models/c", cache.path()).resolve()))
            .collect();
        for handle in handles {
            let checkpoint = handle.join().unwrap().unwrap();
            assert_eq!(read(checkpoint.dir().join("model.safetensors")), expected);
        }
    });
}
