//! Checkpoint resolution: explicit directory, verified cache, Hub fetch (against a
//! local stand-in for the Hub), corruption detection and concurrent fetches.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use model_cache::fixture::{FixtureDtype, FixtureSize};
use model_cache::{ModelSource, SourceError};

struct FakeHub {
    child: Child,
    endpoint: String,
}

impl FakeHub {
    fn serve(dir: &Path) -> Self {
        let mut child = Command::new(common::python())
            .arg(common::reference_script("fake_hub.py"))
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .expect("fake hub port");
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    fn downloads(&self, file: &str) -> u64 {
        let stats: serde_json::Value = ureq::get(&format!("{}/_stats", self.endpoint))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        stats[file].as_u64().unwrap_or(0)
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn source(cache: &Path, endpoint: Option<&str>, offline: bool) -> ModelSource {
    ModelSource {
        model_dir: None,
        model_id: "acme/sentiment-tiny".into(),
        revision: "0123456789abcdef".into(),
        cache_dir: cache.to_path_buf(),
        hub_endpoint: endpoint.map(str::to_owned),
        offline,
        s3: None,
        s3_endpoint: None,
    }
}

/// A tiny f32 fixture, a fake Hub serving it and an empty cache, in the order they must
/// drop in reverse: the cache, then the Hub, then the files it serves.
fn served_tiny_fixture() -> (tempfile::TempDir, FakeHub, tempfile::TempDir) {
    let fixture = common::fixture(FixtureSize::Tiny, FixtureDtype::F32);
    let hub = FakeHub::serve(fixture.path());
    (fixture, hub, tempfile::tempdir().unwrap())
}

/// Resolves through `hub` into `cache`; it must succeed.
fn fetched(cache: &Path, hub: &FakeHub) -> model_cache::Checkpoint {
    source(cache, Some(&hub.endpoint), false).resolve().unwrap()
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn explicit_directory_is_used_as_is_and_a_bad_one_is_named() {
    let fixture = common::fixture(FixtureSize::Tiny, FixtureDtype::F32);
    let cache = tempfile::tempdir().unwrap();
    let mut src = source(cache.path(), None, true);
    src.model_dir = Some(fixture.path().to_path_buf());
    assert_eq!(src.resolve().unwrap().dir(), fixture.path());

    src.model_dir = Some(cache.path().join("nope"));
    let err = src.resolve().unwrap_err().to_string();
    common::assert_mentions(&err, &["--model-dir", "nope"]);
}

#[test]
fn offline_with_an_empty_cache_names_every_place_looked_and_the_fix() {
    let cache = tempfile::tempdir().unwrap();
    let err = source(cache.path(), None, true).resolve().unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }));
    let text = err.to_string();
    common::assert_mentions(
        &text,
        &[
            "MODEL_DIR",
            "models--acme--sentiment-tiny",
            "missing",
            "offline",
            "model-cache fixture",
        ],
    );
}

#[test]
fn hub_unreachable_error_says_why_for_each_place() {
    let cache = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let err = source(cache.path(), Some("http://127.0.0.1:9"), false)
        .resolve()
        .unwrap_err()
        .to_string();
    common::assert_mentions(
        &err,
        &[
            "Hugging Face Hub acme/sentiment-tiny@0123456789abcdef",
            "config.json",
        ],
    );
}

#[test]
fn fetch_fills_a_verified_cache_that_then_works_offline() {
    let (fixture, hub, cache) = served_tiny_fixture();

    let checkpoint = fetched(cache.path(), &hub);
    common::assert_cached_copy(
        checkpoint.dir(),
        fixture.path(),
        &[
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt",
        ],
    );

    drop(hub);
    let again = source(cache.path(), None, true).resolve().unwrap();
    assert_eq!(again.dir(), checkpoint.dir());
    model_cache::Classifier::load(&again, &Default::default()).unwrap();
}

#[test]
fn a_corrupted_cached_file_is_never_loaded_and_is_fetched_again() {
    let (fixture, hub, cache) = served_tiny_fixture();
    let checkpoint = fetched(cache.path(), &hub);
    let weights = checkpoint.dir().join("model.safetensors");

    // Same size, one byte flipped: only the hash can tell.
    let mut bytes = read(weights.clone());
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&weights, &bytes).unwrap();

    let err = source(cache.path(), None, true)
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors is corrupt"), "{err}");

    let repaired = source(cache.path(), Some(&hub.endpoint), false)
        .resolve()
        .unwrap();
    assert_eq!(
        read(repaired.dir().join("model.safetensors")),
        read(fixture.path().join("model.safetensors"))
    );
    assert_eq!(hub.downloads("model.safetensors"), 2);
    assert_eq!(
        hub.downloads("config.json"),
        1,
        "intact files are not fetched again"
    );

    // A truncated file (size mismatch) is caught without hashing.
    std::fs::write(&weights, &bytes[..10]).unwrap();
    let err = source(cache.path(), None, true)
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(err.contains("10 bytes"), "{err}");
}

#[test]
fn concurrent_fetches_download_once_and_all_see_whole_files() {
    let (fixture, hub, cache) = served_tiny_fixture();
    let expected = read(fixture.path().join("model.safetensors"));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| source(cache.path(), Some(&hub.endpoint), false).fetch()))
            .collect();
        for handle in handles {
            let checkpoint = handle.join().unwrap().unwrap();
            assert_eq!(read(checkpoint.dir().join("model.safetensors")), expected);
        }
    });
    assert_eq!(hub.downloads("model.safetensors"), 1);
}

#[test]
fn a_repository_with_only_vocab_txt_is_fetched_and_loads() {
    let fixture = common::fixture(FixtureSize::Tiny, FixtureDtype::F16);
    std::fs::remove_file(fixture.path().join("tokenizer.json")).unwrap();
    let hub = FakeHub::serve(fixture.path());
    let cache = tempfile::tempdir().unwrap();
    let checkpoint = fetched(cache.path(), &hub);
    assert!(!checkpoint.dir().join("tokenizer.json").exists());
    let classifier = model_cache::Classifier::load(&checkpoint, &Default::default()).unwrap();
    assert_eq!(classifier.classify(&["fine"]).unwrap().len(), 1);
}
