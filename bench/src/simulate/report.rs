//! `simulate.md` and its plots (SVG embedded, PNG beside), drawn with the live
//! report's frame, mesh, legend, font and colours: latency per time bucket, the
//! instances over time (Lambda environments, ready pods, nodes), errors over time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::SimResult;
use super::tally::TimelinePoint;
use crate::report::{GREY, color_of, count_axis_top, frame, legend, line, mesh, png_of, svg_of};

pub const PLOTS: [&str; 3] = ["sim-latency", "sim-instances", "sim-errors"];

/// Writes `simulate.json`, `simulate.md` and the plots into `out`.
pub fn write(r: &SimResult, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    let json = out.join("simulate.json");
    std::fs::write(&json, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", json.display()))?;
    written.push(json);
    for name in PLOTS {
        let svg = svg_of(|root| draw(name, root, r, true))?;
        let png = png_of(|root| draw(name, root, r, false))?;
        for (ext, bytes) in [("svg", svg.into_bytes()), ("png", png)] {
            let p = out.join(format!("{name}.{ext}"));
            std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
            written.push(p);
        }
    }
    let md = out.join("simulate.md");
    std::fs::write(&md, markdown(r)).with_context(|| format!("writing {}", md.display()))?;
    written.push(md);
    Ok(written)
}

pub fn markdown(r: &SimResult) -> String {
    let mut s = String::new();
    let c = &r.config;
    let _ = writeln!(s, "# bench simulate\n");
    let _ = writeln!(
        s,
        "Profile `{}` at {} req/s (peak) for {} s, {} arrivals, seed {}. A discrete-event \
         simulation, not a measurement: see `bench/README.md` (bench simulate) for the model.\n",
        c["profile"].as_str().unwrap_or("?"),
        c["rate"],
        c["duration_s"],
        c["spacing"].as_str().unwrap_or("?"),
        c["seed"]
    );
    for n in &r.notes {
        let _ = writeln!(s, "> {n}\n");
    }
    let _ = writeln!(
        s,
        "| side | requests | p50 ms | p90 ms | p99 ms | max ms | 429 | 503 | 504 | cold starts | peak instances | $ / M requests |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let pct = |x: f64| format!("{:.2} %", x * 100.0);
    for (name, m, peak, per_m) in [
        (
            "lambda",
            &r.lambda.summary,
            format!("{} environments", r.lambda.platform.peak_environments),
            r.lambda.cost.per_million,
        ),
        (
            "k8s",
            &r.k8s.summary,
            format!(
                "{} pods, {} nodes",
                r.k8s.platform.peak_ready_pods, r.k8s.platform.peak_nodes
            ),
            r.k8s.cost.per_million,
        ),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} ({}) | {peak} | {:.3} |",
            m.requests,
            m.latency_ms.p50,
            m.latency_ms.p90,
            m.latency_ms.p99,
            m.latency_ms.max,
            pct(m.share_429),
            pct(m.share_503),
            pct(m.share_504),
            m.cold_starts,
            pct(m.cold_start_share),
            per_m
        );
    }
    let _ = writeln!(s);
    for name in PLOTS {
        let _ = writeln!(s, "![{name}]({name}.svg)\n");
    }
    let _ = writeln!(s, "## Cost (a month at the simulated usage)\n");
    let _ = writeln!(s, "| side | item | $ / month |\n|---|---|---:|");
    for (side, cost) in [("lambda", &r.lambda.cost), ("k8s", &r.k8s.cost)] {
        for (item, v) in &cost.month {
            let _ = writeln!(s, "| {side} | {item} | {v:.2} |");
        }
        let _ = writeln!(s, "| {side} | **total** | **{:.2}** |", cost.month_total);
    }
    let _ = writeln!(
        s,
        "\nLambda: {} invocations, {:.1} GB-s billed (init included, 1 ms rounding). \
         Kubernetes: {:.0} node-seconds, {:.0} pod-seconds, {} pods started, {} nodes added, \
         mean batch {:.2}.\n",
        r.lambda.platform.invocations,
        r.lambda.platform.billed_gb_s,
        r.k8s.platform.node_seconds,
        r.k8s.platform.pod_seconds,
        r.k8s.platform.pods_started,
        r.k8s.platform.nodes_added,
        r.k8s.platform.mean_batch
    );
    let _ = writeln!(s, "## Inputs\n");
    if let Some(src) = r.inputs["sources"].as_object() {
        for (k, v) in src {
            let _ = writeln!(s, "- `{k}`: {}", v.as_str().unwrap_or(""));
        }
    }
    let _ = writeln!(
        s,
        "\n## Parameters\n\n```json\n{}\n```",
        serde_json::to_string_pretty(&r.config).unwrap_or_default()
    );
    s
}

fn sides(r: &SimResult) -> [(&'static str, &[TimelinePoint]); 2] {
    [
        ("lambda", &r.lambda.summary.timeline),
        ("k8s", &r.k8s.summary.timeline),
    ]
}

fn x_range(r: &SimResult) -> (f64, f64) {
    let end = sides(r)
        .iter()
        .filter_map(|(_, t)| t.last().map(|p| p.t_s))
        .fold(1.0, f64::max);
    let step = r.lambda.summary.timeline.get(1).map_or(1.0, |p| p.t_s);
    (0.0, end + step)
}

fn draw<DB: DrawingBackend<ErrorType: 'static>>(
    name: &str,
    root: &DrawingArea<DB, Shift>,
    r: &SimResult,
    svg: bool,
) -> anyhow::Result<()> {
    let (x0, x1) = x_range(r);
    match name {
        "sim-latency" => {
            let vals = sides(r)
                .iter()
                .flat_map(|(_, t)| t.iter().filter(|p| p.requests > 0))
                .flat_map(|p| [p.p50_ms, p.p99_ms])
                .filter(|v| *v > 0.0)
                .collect::<Vec<_>>();
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(0.0, f64::max);
            let (lo, hi) = if vals.is_empty() {
                (1.0, 10.0)
            } else {
                (lo / 1.5, hi * 1.5)
            };
            let mut chart = frame(
                root,
                "Simulated latency per time bucket (p99 thick, p50 thin)",
            )
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())?;
            mesh(&mut chart, "simulated time (s)", "latency (ms)")?;
            for (i, (side, t)) in sides(r).iter().enumerate() {
                let color = color_of(side, i);
                for (q, width) in [(0.99, 3), (0.5, 1)] {
                    let pts = t
                        .iter()
                        .filter(|p| p.requests > 0)
                        .map(|p| (p.t_s, if q > 0.9 { p.p99_ms } else { p.p50_ms }))
                        .filter(|p| p.1 > 0.0);
                    let label = format!("{side} {}", if q > 0.9 { "p99" } else { "p50" });
                    line(&mut chart, pts, color, width, svg, label)?;
                }
            }
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
        "sim-instances" => {
            let hi = sides(r)
                .iter()
                .flat_map(|(_, t)| t.iter().flat_map(|p| [p.instances, p.nodes]))
                .max()
                .unwrap_or(1);
            let mut chart = frame(
                root,
                "Lambda environments, ready pods and nodes over time (max per bucket)",
            )
            .build_cartesian_2d(x0..x1, 0.0..count_axis_top(hi))?;
            mesh(&mut chart, "simulated time (s)", "count")?;
            let series: [(&str, &[TimelinePoint], bool, RGBColor); 3] = [
                (
                    "lambda environments",
                    &r.lambda.summary.timeline,
                    false,
                    color_of("lambda", 0),
                ),
                (
                    "k8s ready pods",
                    &r.k8s.summary.timeline,
                    false,
                    color_of("k8s", 1),
                ),
                ("k8s nodes", &r.k8s.summary.timeline, true, GREY),
            ];
            for (label, t, nodes, color) in series {
                let pts = t
                    .iter()
                    .map(|p| (p.t_s, if nodes { p.nodes } else { p.instances } as f64));
                line(&mut chart, pts, color, 2, svg, label.to_string())?;
            }
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
        _ => {
            let share = |p: &TimelinePoint| {
                p.errors.values().sum::<u64>() as f64 / p.requests.max(1) as f64 * 100.0
            };
            let mut chart = frame(root, "Failed requests per time bucket (429, 503, 504)")
                .build_cartesian_2d(x0..x1, 0.0..105.0)?;
            mesh(
                &mut chart,
                "simulated time (s)",
                "failed requests (% of the bucket)",
            )?;
            for (i, (side, t)) in sides(r).iter().enumerate() {
                let color = color_of(side, i);
                let pts = t.iter().map(|p| (p.t_s, share(p)));
                line(&mut chart, pts, color, 2, svg, format!("{side} errors"))?;
            }
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
    }
    Ok(())
}
