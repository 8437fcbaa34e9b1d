//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use model_cache::fixture::{FixtureDtype, FixtureSize, FixtureSpec};

/// The Python the reference scripts run under (`PYTHON`, default `python3`); `make test`
/// installs numpy and tokenizers into it.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

pub fn reference_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("reference")
        .join(name)
}

/// Runs a reference script with `args`, feeding `input` as JSON on stdin.
pub fn run_python(script: &str, args: &[&str], input: &serde_json::Value) -> serde_json::Value {
    let mut child = Command::new(python())
        .arg(reference_script(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (make test installs numpy and tokenizers)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("script prints JSON")
}

pub fn fixture(size: FixtureSize, dtype: FixtureDtype) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let spec = FixtureSpec {
        dtype,
        ..FixtureSpec::new(size)
    };
    model_cache::fixture::write(dir.path(), &spec).unwrap();
    dir
}

/// The real bert-base-uncased vocabulary if `scripts/fetch-vocab.sh` has put it in the
/// cache, else `None`.
pub fn real_vocab() -> Option<PathBuf> {
    let path = std::env::var_os("MODEL_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(model_cache::source::default_cache_dir)
        .join("vocab")
        .join("bert-base-uncased.txt");
    path.is_file().then_some(path)
}

/// Asserts that the cached checkpoint in `copy` holds `files` byte for byte as in
/// `original`, and that its manifest records the weights' sha256.
pub fn assert_cached_copy(copy: &Path, original: &Path, files: &[&str]) {
    let read = |path: PathBuf| std::fs::read(path).unwrap();
    for file in files {
        assert_eq!(read(copy.join(file)), read(original.join(file)), "{file}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(copy.join("manifest.json"))).unwrap();
    let weights = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "model.safetensors")
        .expect("weights in the manifest");
    assert_eq!(
        weights["sha256"],
        model_cache::sha256_file(&original.join("model.safetensors")).unwrap()
    );
}

/// Asserts that `text` (an error's message, mostly) names every one of `needles`.
pub fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}
