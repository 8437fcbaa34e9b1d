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

/// `make bench`'s suite of 2026-12-08 02:49 UTC on this project's 2-core machine, quiet
/// (local default, full-size f16 fixture, 60 s a profile): recorded live data. Steady
/// ran right after `make up` (cold Lambda); step and spike found the Lambda's
/// environments warm from the runs before them.
fn live(profile: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/live-20261208")
        .join(profile)
}

#[test]
fn validate_agrees_with_recorded_live_runs() {
    for profile in ["steady", "spike"] {
        let o = bench(&["validate", live(profile).to_str().unwrap()]);
        assert!(o.status.success(), "{profile}: {}", text(&o));
    }
    // Step: all within 20 % but the Lambda's p99 (bench/README.md, Validation).
    let o = bench(&["validate", live("step").to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let missed: Vec<_> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| format!("{} {}", c["backend"], c["quantile"]))
        .collect();
    assert_eq!(missed, [r#""lambda" "p99""#], "{v}");
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
