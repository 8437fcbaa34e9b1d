//! The `model-cache` binary as a new user runs it: fixture, info, predict.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn model_cache(args: &[&str], stdin: Option<&str>) -> Output {
    model_cache_with_env(args, stdin, &[])
}

fn model_cache_with_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_model-cache"))
        .args(args)
        .envs(env.iter().copied())
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// A temporary directory holding a fixture checkpoint made by `model-cache fixture`
/// (in its `ckpt`).
fn fixture_checkpoint() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    stdout(&model_cache(
        &["fixture", "--out", ckpt.to_str().unwrap()],
        None,
    ));
    (dir, ckpt)
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn fixture_then_info_then_predict() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("ckpt");
    let out_dir = out_dir.to_str().unwrap();
    let summary: serde_json::Value = serde_json::from_str(&stdout(&model_cache(
        &[
            "fixture", "--size", "tiny", "--dtype", "f16", "--out", out_dir,
        ],
        None,
    )))
    .unwrap();
    assert_eq!(summary["vocab"], "generated");

    let info: serde_json::Value =
        serde_json::from_str(&stdout(&model_cache(&["info", out_dir], None))).unwrap();
    assert_eq!(info["dtype"], "F16");
    assert_eq!(info["labels"], serde_json::json!(["NEGATIVE", "POSITIVE"]));
    assert_eq!(info["weights_sha256"].as_str().unwrap().len(), 64);

    let args_out = stdout(&model_cache(
        &["predict", "--model-dir", out_dir, "I loved it", "awful"],
        None,
    ));
    let stdin_out = stdout(&model_cache(
        &["predict", "--model-dir", out_dir],
        Some("I loved it\n\nawful\n"),
    ));
    assert_eq!(
        args_out, stdin_out,
        "stdin lines and arguments give the same answers"
    );
    let lines: Vec<serde_json::Value> = args_out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert!(["NEGATIVE", "POSITIVE"].contains(&line["label"].as_str().unwrap()));
        let score = line["score"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&score), "{score}");
    }
}

#[test]
fn predict_refuses_blank_text_and_missing_models_clearly() {
    let (dir, ckpt) = fixture_checkpoint();
    let out = model_cache(
        &["predict", "--model-dir", ckpt.to_str().unwrap(), "  "],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty or whitespace-only"));

    let out = model_cache(
        &[
            "predict",
            "--model-cache-dir",
            dir.path().join("cache").to_str().unwrap(),
            "hi",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no checkpoint found") && err.contains("model-cache fixture"),
        "{err}"
    );
}

/// The API's 64-texts-per-request limit is not the CLI's: a file of any length streams
/// through in batches, one answer per non-blank line, in order; a bad line is named.
#[test]
fn predict_streams_stdin_of_any_length() {
    let (_dir, ckpt) = fixture_checkpoint();
    let texts: Vec<String> = (0..150).map(|i| format!("review number {i}")).collect();
    let input = texts.join("\n\n") + "\n";
    let out = stdout(&model_cache(
        &["predict", "--model-dir", ckpt.to_str().unwrap()],
        Some(&input),
    ));
    let answers: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 150, "one answer per non-blank line");
    let alone = stdout(&model_cache(
        &[
            "predict",
            "--model-dir",
            ckpt.to_str().unwrap(),
            &texts[149],
        ],
        None,
    ));
    let alone: serde_json::Value = serde_json::from_str(alone.trim()).unwrap();
    assert_eq!(alone["label"], answers[149]["label"]);
    let (a, b) = (alone["score"].as_f64(), answers[149]["score"].as_f64());
    assert!(
        (a.unwrap() - b.unwrap()).abs() < 1e-5,
        "the 150th answer belongs to the 150th line: {a:?} vs {b:?}"
    );

    let too_long = format!("fine\n{}\n", "a".repeat(100_001));
    let out = model_cache(
        &["predict", "--model-dir", ckpt.to_str().unwrap()],
        Some(&too_long),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("limit"), "{err}");
}

/// Machines without AVX-512 (most Lambda and arm64 hosts) run candle's matmul and
/// attention instead of the hand-written kernels: same scores, whichever runs here.
#[test]
fn portable_path_without_avx512_gives_the_same_scores() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let ckpt = ckpt.to_str().unwrap();
    stdout(&model_cache(
        &["fixture", "--size", "tiny", "--out", ckpt],
        None,
    ));
    let texts = [
        "predict",
        "--model-dir",
        ckpt,
        "I loved it",
        "awful, just awful and far too long for what it had to say",
        "ok",
    ];
    let scores = |env: &[(&str, &str)]| -> Vec<(String, f64)> {
        stdout(&model_cache_with_env(&texts, None, env))
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["label"].as_str().unwrap().to_owned(),
                    v["score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let fast = scores(&[]);
    let portable = scores(&[("MODEL_DISABLE_AVX512", "1"), ("MODEL_DISABLE_AMX", "1")]);
    assert_eq!(fast.len(), 3);
    for ((la, sa), (lb, sb)) in fast.iter().zip(&portable) {
        assert_eq!(la, lb);
        assert!((sa - sb).abs() < 1e-5, "{sa} vs {sb}");
    }
}
