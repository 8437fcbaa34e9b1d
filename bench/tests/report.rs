//! The report (`bench::report`, `bench report`, the end of `bench run`) from hand-made
//! results: the files, the headline numbers, the optional `cold_starts` and `platform`,
//! the PNG's pixels, and bad input.

mod common;

use std::path::{Path, PathBuf};

use common::{bench, short_run};
use serde_json::{Value, json};

/// A spike run (10 s, the burst the last 5 s at 10 req/s) against `lambda` (3 cold
/// requests, then 20 ms) and `k8s` (10 ms, three 429s in second 6). The summaries'
/// p50s are set by hand (21.5 and 10.4 ms) to check the report prints those.
fn results(with_new_fields: bool) -> Value {
    let mut records = Vec::new();
    for i in 0..50u64 {
        let scheduled_ms = 5000.0 + i as f64 * 100.0;
        let (lat, cold) = if i < 3 {
            (3000.0 - i as f64 * 100.0, i == 0)
        } else {
            (20.0, false)
        };
        records.push(json!({
            "i": i, "backend": "lambda", "text_class": "short", "words": 10,
            "scheduled_ms": scheduled_ms, "sent_ms": scheduled_ms, "latency_ms": lat,
            "service_ms": lat, "status": 200, "error": null, "attempts": null,
            "served_by": null, "queue_ms": null, "inference_ms": null,
            "server_total_ms": null, "cold": cold, "lambda_instance": "i-1"
        }));
        let throttled = (10..13).contains(&i);
        records.push(json!({
            "i": i, "backend": "k8s", "text_class": "short", "words": 10,
            "scheduled_ms": scheduled_ms, "sent_ms": scheduled_ms,
            "latency_ms": if throttled { 2.0 } else { 10.0 },
            "service_ms": 10.0, "status": if throttled { 429 } else { 200 },
            "error": if throttled { json!("too_many_requests") } else { Value::Null },
            "attempts": null, "served_by": null, "queue_ms": 0.5, "inference_ms": 8.0,
            "server_total_ms": 9.0, "cold": null, "lambda_instance": null
        }));
    }
    let per_second = |first_p99: f64, p99: f64, errors_in_6: u64| {
        (5..10)
            .map(|s| {
                json!({
                    "second": s, "requests": 10,
                    "errors": if s == 6 { errors_in_6 } else { 0 },
                    "p50_ms": p99, "p99_ms": if s == 5 { first_p99 } else { p99 },
                    "max_ms": if s == 5 { first_p99 } else { p99 }
                })
            })
            .collect::<Vec<_>>()
    };
    let pct = |p50: f64, p99: f64, max: f64| json!({"count": 50, "min": 2.0, "mean": p50, "p50": p50, "p90": p50, "p99": p99, "p999": max, "max": max});
    let mut v = json!({
        "version": 1,
        "started_at": "20261207T120000Z",
        "started_unix_s": 1_796_644_800.0,
        "wall_s": 13.2,
        "config": {
            "mode": "open", "profile": "spike", "rate": 10.0, "concurrency": null,
            "duration_s": 10.0, "requests": null, "steps": 4, "burst_s": 5.0,
            "trace": null, "texts": "Short", "seed": 1, "timeout_s": 30.0,
            "late_threshold_ms": 2.0, "max_in_flight": 1024,
            "targets": [{"name": "lambda", "url": "http://127.0.0.1:9001"},
                        {"name": "k8s", "url": "http://127.0.0.1:8080"}],
            "a_flag_added_later": true
        },
        "backends": {
            "lambda": {
                "requests": 50, "ok": 50, "errors": {}, "error_rate": 0.0,
                "offered_rps": 10.2, "throughput_rps": 6.25,
                "latency_ms": pct(21.5, 2900.0, 3000.0), "ok_latency_ms": pct(21.5, 2900.0, 3000.0),
                "late_sends": 0, "send_lag_ms": pct(0.1, 0.2, 0.3),
                "cold_starts": 1, "retried": 0,
                "per_second": per_second(3000.0, 22.0, 0)
            },
            "k8s": {
                "requests": 50, "ok": 47, "errors": {"429": 3}, "error_rate": 0.06,
                "offered_rps": 10.2, "throughput_rps": 9.4,
                "latency_ms": pct(10.4, 11.0, 11.0), "ok_latency_ms": pct(10.4, 11.0, 11.0),
                "late_sends": 0, "send_lag_ms": pct(0.1, 0.2, 0.3),
                "cold_starts": 0, "retried": 0,
                "per_second": per_second(11.0, 11.0, 3)
            }
        },
        "records": records
    });
    if with_new_fields {
        v["cold_starts"] = json!([
            {"backend": "lambda", "at_ms": 5000.0, "init_ms": 2400.5, "source": "report",
             "instance": "i-1", "requests": [0, 1, 2]}
        ]);
        v["platform"] = json!({
            "lambda": {"billed_gb_s": 12.5, "invocations": 50, "billed_ms": 6250.0, "memory_mb": 2048},
            "k8s": {"pod_seconds": 300.0, "pods_max": 2}
        });
    }
    v
}

fn write_json(dir: &Path, v: &Value) -> PathBuf {
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_vec(v).unwrap()).unwrap();
    path
}

/// The cells of the headline row of `backend`.
fn headline_row(md: &str, backend: &str) -> Vec<String> {
    let head = md
        .split("## Headline")
        .nth(1)
        .expect("a headline section")
        .split("\n## ")
        .next()
        .unwrap();
    let line = head
        .lines()
        .find(|l| l.starts_with(&format!("| {backend} |")))
        .unwrap_or_else(|| panic!("no headline row for {backend} in\n{md}"));
    line.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

fn expected_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![dir.join("report.md")];
    for p in bench::report::PLOTS {
        v.push(dir.join(format!("{p}.svg")));
        v.push(dir.join(format!("{p}.png")));
    }
    v
}

fn check_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{}: not a PNG",
        path.display()
    );
    assert!(
        bytes.len() > 20_000,
        "{}: only {} bytes",
        path.display(),
        bytes.len()
    );
    let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 720));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    // The caption is text drawn with the embedded font: dark pixels in the top band,
    // where nothing else is drawn.
    let row = info.line_size;
    let dark = (0..56)
        .flat_map(|y| buf[y * row..(y + 1) * row].chunks(3))
        .filter(|px| px.iter().map(|&c| u32::from(c)).sum::<u32>() < 200)
        .count();
    assert!(
        dark > 300,
        "{}: {dark} dark pixels in the caption",
        path.display()
    );
}

#[test]
fn the_report_of_a_spike_with_cold_starts_and_billing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_json(dir.path(), &results(true));
    let out = dir.path().join("report");
    let written = bench::report::write(&path, &out).unwrap();
    assert_eq!(written, expected_files(&out));
    for f in &written {
        assert!(f.is_file(), "{} missing", f.display());
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();

    // backend | requests | p50 | p99 | max | throughput | error rate | cold | delayed | billed
    let lambda = headline_row(&md, "lambda");
    assert_eq!(lambda[1], "50");
    assert_eq!(lambda[2], "21.5", "{lambda:?}");
    assert_eq!(lambda[3], "2900");
    assert_eq!(lambda[4], "3000");
    assert_eq!(lambda[7], "1");
    // Matched: the 3 requests the cold start delayed, of 50.
    assert_eq!(lambda[8], "6.0 % (3)");
    assert_eq!(lambda[9], "12.50 GB-s");
    let k8s = headline_row(&md, "k8s");
    assert_eq!(k8s[2], "10.4", "{k8s:?}");
    assert_eq!(k8s[6], "6.00 %");
    assert_eq!(k8s[7], "0");
    assert_eq!(k8s[9], "300 pod-s");

    // The spike: lambda settled from second 6 (1 s after the burst's start at 5 s),
    // k8s from 7 (its 429s in second 6 keep that second unsettled).
    assert!(md.contains("## Time to absorb the burst"), "{md}");
    assert!(md.contains("| lambda | 21.5 | 1 s |"), "{md}");
    assert!(md.contains("| k8s | 10.4 | 2 s |"), "{md}");
    assert!(md.contains("![Latency over time](latency.svg)"));
    assert!(md.contains("![Latency CDF](cdf.svg)"));
    assert!(md.contains("![Throughput](throughput.svg)"));
    assert!(md.contains("![Errors](errors.svg)"));
    assert!(md.contains("## Cold starts"));
    assert!(
        md.contains("| lambda | 5.00 | 2400 | report | i-1 | 3 |"),
        "{md}"
    );
    assert!(md.contains("Lambda: 12.50 GB-s billed (50 invocations"));
    assert!(md.contains("Kubernetes: 300 pod-seconds (at most 2 pods"));
    assert!(md.contains("| profile | spike |"));
    assert!(md.contains("`lambda` = http://127.0.0.1:9001"));
    assert!(md.contains("Open loop"));

    for p in bench::report::PLOTS {
        let svg = std::fs::read_to_string(out.join(format!("{p}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{p}.svg");
        // The legend names the backends (the errors plot only the one with errors).
        assert!(svg.contains("k8s"), "{p}.svg has no k8s");
        if p != "errors" {
            assert!(svg.contains("lambda"), "{p}.svg has no lambda");
        }
        check_png(&out.join(format!("{p}.png")));
    }
}

#[test]
fn an_old_results_json_without_cold_starts_or_platform() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = results(false);
    v["config"]["profile"] = json!("constant");
    let path = write_json(dir.path(), &v);
    let written = bench::report::write(&path, dir.path()).unwrap();
    assert_eq!(written, expected_files(dir.path()));
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let lambda = headline_row(&md, "lambda");
    assert_eq!(lambda[2], "21.5");
    // The header: one record answered `x-lambda-cold: true`.
    assert_eq!(lambda[7], "1");
    assert_eq!(lambda[8], "2.0 % (1)");
    assert_eq!(lambda[9], "—");
    assert_eq!(headline_row(&md, "k8s")[9], "—");
    assert!(!md.contains("## Cold starts"));
    assert!(!md.contains("## What the platforms billed"));
    // Not a spike: no time to absorb.
    assert!(!md.contains("Time to absorb"));
    check_png(&dir.path().join("latency.png"));
}

/// The `report.md` of [`results`] (without the new fields) without its `key`.
fn report_without(key: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut v = results(false);
    v.as_object_mut().unwrap().remove(key);
    let path = write_json(dir.path(), &v);
    bench::report::write(&path, dir.path()).unwrap();
    std::fs::read_to_string(dir.path().join("report.md")).unwrap()
}

#[test]
fn a_summary_only_file_and_one_without_summaries() {
    // Without records: the summaries alone (the plots from the per-second data).
    let md = report_without("records");
    assert_eq!(headline_row(&md, "lambda")[2], "21.5");
    assert_eq!(headline_row(&md, "lambda")[7], "1");

    // Without summaries: computed from the records (nearest rank: the 25th of 50).
    let md = report_without("backends");
    assert_eq!(headline_row(&md, "lambda")[2], "20.0");
    assert_eq!(headline_row(&md, "lambda")[4], "3000");
    assert_eq!(headline_row(&md, "k8s")[6], "6.00 %");
}

#[test]
fn write_value_is_write_of_the_same_json() {
    let dir = tempfile::tempdir().unwrap();
    let v = results(true);
    let path = write_json(dir.path(), &v);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    bench::report::write(&path, &a).unwrap();
    bench::report::write_value(&v, &b).unwrap();
    assert_eq!(
        std::fs::read_to_string(a.join("report.md")).unwrap(),
        std::fs::read_to_string(b.join("report.md")).unwrap()
    );
}

#[test]
fn unreadable_or_malformed_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let e = format!(
        "{:#}",
        bench::report::write(&missing, dir.path()).unwrap_err()
    );
    assert!(e.contains("nope.json"), "{e}");

    for (name, body) in [
        ("broken.json", "{\"backends\": "),
        (
            "wrong.json",
            "{\"backends\": {\"k8s\": {\"requests\": \"many\"}}}",
        ),
        ("empty.json", "{}"),
        ("array.json", "[]"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let e = format!(
            "{:#}",
            bench::report::write(&path, &dir.path().join("out")).unwrap_err()
        );
        assert!(e.contains(name), "{name}: {e}");
    }
    assert!(!dir.path().join("out").join("report.md").exists());
}

#[test]
fn bench_report_writes_beside_the_results_or_into_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_json(dir.path(), &results(true));
    let o = bench(&["report", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("report.md"));
    for f in expected_files(dir.path()) {
        assert!(f.is_file(), "{} missing", f.display());
    }
    let out = dir.path().join("elsewhere");
    let o = bench(&[
        "report",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("cdf.png").is_file());

    let o = bench(&["report", dir.path().join("missing.json").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing.json"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_run_ends_with_the_report() {
    let run = short_run().await;
    assert!(run.stdout.contains("report.md"), "{}", run.stdout);
    let md = std::fs::read_to_string(run.out.join("report.md")).unwrap();
    assert_eq!(headline_row(&md, "k8s")[1], "20");
    assert!(run.out.join("latency.png").is_file());
}
