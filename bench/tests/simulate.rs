//! `bench simulate` and `bench validate` end to end.
//!
//! The validation fixture (`fixtures/sim-selfcheck/results.json`) is CONSTRUCTED by
//! `fixtures/make_sim_selfcheck.py`, an independent implementation of the same model
//! (round robin over batching pods, a Lambda pool with inits), not a live run: no live
//! stack was available. The validation tests therefore check self-consistency (the
//! simulator agrees with a second implementation, fed through results.json the way a
//! live run would be), not agreement with AWS or the real server.

mod common;

use std::path::{Path, PathBuf};

use common::{bench, text};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sim-selfcheck")
}

/// A finished [`simulate`].
struct Simulation {
    /// Where it wrote, inside a directory removed on drop.
    out: PathBuf,
    _dir: tempfile::TempDir,
    printed: String,
    /// `simulate.json`.
    json: serde_json::Value,
}

/// `bench simulate ARGS --out DIR` into a fresh directory; it must succeed.
fn simulate(args: &[&str]) -> Simulation {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sim");
    let o = bench(&[&["simulate"], args, &["--out", out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let json = serde_json::from_slice(&std::fs::read(out.join("simulate.json")).unwrap()).unwrap();
    Simulation {
        out,
        _dir: dir,
        printed: text(&o),
        json,
    }
}

#[test]
fn simulate_writes_json_markdown_and_plots() {
    let sim = simulate(&[
        "--profile",
        "spike",
        "--rate",
        "500",
        "--duration",
        "2m",
        "--burst",
        "30s",
    ]);
    let (out, printed, json) = (&sim.out, &sim.printed, &sim.json);
    assert!(
        printed.contains("lambda") && printed.contains("k8s"),
        "{printed}"
    );
    assert!(printed.contains("default entered by hand"), "{printed}");
    assert!(json["lambda"]["requests"].as_u64().unwrap() > 10_000);
    assert!(json["lambda"]["cold_starts"].as_u64().unwrap() > 0);
    assert!(json["k8s"]["cost"]["per_million"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(out.join("simulate.md")).unwrap();
    for plot in ["sim-latency", "sim-instances", "sim-errors"] {
        assert!(md.contains(&format!("{plot}.svg")), "{plot}");
        assert!(out.join(format!("{plot}.png")).exists());
        let svg = std::fs::read_to_string(out.join(format!("{plot}.svg"))).unwrap();
        assert!(svg.contains("lambda"), "{plot}");
    }
}

#[test]
fn simulate_with_inputs_says_what_was_measured() {
    let json = simulate(&[
        "--inputs",
        fixture().to_str().unwrap(),
        "--rate",
        "50",
        "--duration",
        "1m",
    ])
    .json;
    let sources = &json["inputs"]["sources"];
    for k in ["words", "k8s_batch", "lambda_duration", "lambda_init_ms"] {
        assert!(
            sources[k].as_str().unwrap().starts_with("measured"),
            "{k}: {}",
            sources[k]
        );
    }
    // The fit recovers the figures the fixture was made with (4.4 + 0.332/token).
    let b = json["inputs"]["k8s_batch"]["b_ms_per_token"]
        .as_f64()
        .unwrap();
    assert!((b - 0.332).abs() < 0.03, "{b}");
}

/// Self-consistency, not a live comparison: see the module comment.
#[test]
fn validate_agrees_with_the_constructed_run() {
    let o = bench(&["validate", fixture().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let printed = text(&o);
    assert!(printed.contains("validation passed"), "{printed}");
    assert_eq!(printed.matches(" ok").count(), 4, "{printed}");
}

#[test]
fn validate_fails_beyond_the_tolerance() {
    // The same run with every k8s latency summary 50 % higher than its records say.
    let mut run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("results.json")).unwrap()).unwrap();
    for q in ["p50", "p99"] {
        let v = run["backends"]["k8s"]["latency_ms"][q].as_f64().unwrap();
        run["backends"]["k8s"]["latency_ms"][q] = (v * 1.5).into();
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("results.json"),
        serde_json::to_vec(&run).unwrap(),
    )
    .unwrap();
    let o = bench(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("BEYOND TOLERANCE"));
    // A wider tolerance accepts it.
    let o = bench(&[
        "validate",
        dir.path().to_str().unwrap(),
        "--tolerance",
        "0.5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn validate_refuses_a_closed_loop_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("results.json"),
        r#"{"config": {"mode": "closed"}, "records": []}"#,
    )
    .unwrap();
    let o = bench(&["validate", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("closed-loop"), "{}", text(&o));
}
