use super::arrivals::{SimProfile, Spacing};
use super::inputs::{Dist, Linear};
use super::*;

fn prices() -> Prices {
    Prices::load(None).unwrap()
}

fn cfg(profile: SimProfile, rate: f64, secs: f64) -> SimConfig {
    SimConfig::new(profile, rate, secs, 7)
}

/// Short texts only: the pods' capacity is then clear (a mix with long texts makes
/// padded batches that can collapse a loaded pod, which is its own test).
fn short(mut c: SimConfig) -> SimConfig {
    c.inputs.words = inputs::Words::Mix {
        short: 1,
        medium: 0,
        long: 0,
    };
    c
}

#[test]
fn littles_law_holds_in_steady_state() {
    let mut c = short(cfg(SimProfile::Constant, 200.0, 600.0));
    c.inputs.k8s_overhead_ms = Dist::Fixed(0.0);
    c.inputs.lambda_overhead_ms = Dist::Fixed(0.0);
    c.k8s.fixed_replicas = Some(4);
    c.k8s.initial_nodes = 2;
    let r = run(&c, &prices()).unwrap();
    for (name, s, l) in [
        (
            "lambda",
            &r.lambda.summary,
            r.lambda.platform.mean_in_system,
        ),
        ("k8s", &r.k8s.summary, r.k8s.platform.mean_in_system),
    ] {
        assert_eq!(s.requests, s.ok, "{name}: no errors at this rate");
        // L = λW with the nominal rate, not the realized one.
        let expected = 200.0 * s.mean_latency_ms / 1000.0;
        let err = (l - expected).abs() / expected;
        assert!(err < 0.03, "{name}: L {l:.3} vs λW {expected:.3}");
        assert!(l > 0.5, "{name}: a non-trivial system ({l})");
    }
}

#[test]
fn no_cold_starts_when_the_keep_alive_outlasts_the_gap() {
    let mut c = cfg(SimProfile::Constant, 1.0, 600.0);
    c.spacing = Spacing::Uniform;
    // An init shorter than the gap (with 1.2 s the second request, 1 s in, finds the
    // first environment still busy and starts a second one).
    c.inputs.lambda_init_ms = Dist::Fixed(100.0);
    let r = run(&c, &prices()).unwrap();
    assert_eq!(r.lambda.summary.requests, 600);
    assert_eq!(r.lambda.summary.cold_starts, 1, "only the very first");
    assert_eq!(r.lambda.platform.peak_environments, 1);
    // A keep-alive shorter than the 1 s gap: every request is cold.
    c.lambda.keep_alive_s = 0.5;
    let r = run(&c, &prices()).unwrap();
    assert_eq!(r.lambda.summary.cold_starts, 600);
}

#[test]
fn environments_warm_at_the_start_serve_without_an_init() {
    let mut c = cfg(SimProfile::Constant, 1.0, 60.0);
    c.spacing = Spacing::Uniform;
    c.inputs.lambda_init_ms = Dist::Fixed(100.0);
    assert_eq!(run(&c, &prices()).unwrap().lambda.summary.cold_starts, 1);
    c.lambda.warm_at_start = 2;
    let r = run(&c, &prices()).unwrap();
    assert_eq!(r.lambda.summary.cold_starts, 0);
    assert_eq!(r.lambda.platform.peak_environments, 2);
}

#[test]
fn a_run_warm_at_the_start_is_told_by_its_records() {
    let records: Vec<serde_json::Value> = serde_json::from_str(
        r#"[{"lambda_instance": "a", "cold": true}, {"lambda_instance": "a", "cold": false},
            {"lambda_instance": "b", "cold": false}, {"lambda_instance": "c"},
            {"lambda_instance": null}, {"backend": "k8s"}]"#,
    )
    .unwrap();
    // b and c answered and never cold: they were up before the run.
    assert_eq!(super::validate::warm_at_start(&records), 2);
}

#[test]
fn the_hpa_never_exceeds_max_replicas() {
    let mut c = cfg(SimProfile::Ramp, 2000.0, 900.0);
    c.k8s.max_replicas = 5;
    c.k8s.max_nodes = 50;
    let r = run(&c, &prices()).unwrap();
    let k = &r.k8s;
    assert_eq!(k.platform.peak_pods, 5, "scaled up to the max, no further");
    assert!(k.platform.peak_ready_pods <= 5);
    assert!(k.summary.timeline.iter().all(|p| p.instances <= 5));
    // And it did scale: past the default two.
    assert!(k.summary.timeline.iter().any(|p| p.instances == 5));
}

#[test]
fn nothing_is_dropped_below_capacity() {
    let r = run(&short(cfg(SimProfile::Constant, 50.0, 300.0)), &prices()).unwrap();
    for s in [&r.lambda.summary, &r.k8s.summary] {
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.ok, s.requests);
        assert!(s.requests > 14_000);
    }
}

#[test]
fn throttles_beyond_the_concurrency_limit() {
    let mut c = cfg(SimProfile::Constant, 1000.0, 60.0);
    c.lambda.concurrency = 10;
    // 50 ms each: 50 concurrent wanted, 10 allowed.
    c.inputs.lambda_duration = Linear::fixed(50.0, 0.0);
    let r = run(&c, &prices()).unwrap();
    let l = &r.lambda;
    assert!(l.platform.peak_environments <= 10);
    assert!(l.summary.share_429 > 0.7, "{}", l.summary.share_429);
    // Below the limit (and inits short enough that the start-up needs fewer than
    // 1,000 environments): none.
    c.lambda.concurrency = 1000;
    c.inputs.lambda_init_ms = Dist::Fixed(100.0);
    let r = run(&c, &prices()).unwrap();
    assert_eq!(r.lambda.summary.share_429, 0.0);
}

#[test]
fn the_burst_rate_throttles_below_the_account_limit() {
    // 5,000 req/s of 1 s inits: ~5,000 environments wanted at once; the account
    // allows 10,000 but the function adds 1,000 at once, then 100 per second.
    let mut c = cfg(SimProfile::Spike, 5000.0, 30.0);
    c.curve.burst_s = 20.0;
    c.lambda.concurrency = 10_000;
    c.inputs.lambda_init_ms = Dist::Fixed(1000.0);
    c.inputs.lambda_duration = Linear::fixed(1000.0, 0.0);
    let r = run(&c, &prices()).unwrap();
    let l = &r.lambda;
    assert!(l.summary.share_429 > 0.1, "{}", l.summary.share_429);
    // 1,000 + 100/s over the 20 s burst, at most.
    assert!(
        l.platform.peak_environments <= 3_001,
        "{}",
        l.platform.peak_environments
    );
    assert!(l.platform.peak_environments >= 2_500);
}

#[test]
fn padded_batches_of_mixed_lengths_collapse_a_loaded_pod() {
    // 20 req/s a pod: short texts alone keep up easily; one long text in 10 makes
    // every batch that holds one cost n × 512 tokens, and the queue runs away.
    let mut c = short(cfg(SimProfile::Constant, 40.0, 300.0));
    c.k8s.fixed_replicas = Some(2);
    let calm = run(&c, &prices()).unwrap();
    assert_eq!(calm.k8s.summary.errors.len(), 0);
    c.inputs.words = inputs::Words::Mix {
        short: 6,
        medium: 3,
        long: 1,
    };
    let mixed = run(&c, &prices()).unwrap();
    assert!(
        mixed.k8s.summary.share_504 > 0.3,
        "{:?}",
        mixed.k8s.summary.errors
    );
}

#[test]
fn an_overloaded_pod_answers_503() {
    let mut c = cfg(SimProfile::Constant, 3000.0, 30.0);
    c.k8s.fixed_replicas = Some(1);
    let r = run(&c, &prices()).unwrap();
    assert!(r.k8s.summary.share_503 > 0.5, "{}", r.k8s.summary.share_503);
}

#[test]
fn the_same_seed_gives_the_same_json_and_another_differs() {
    let c = cfg(SimProfile::Step, 300.0, 120.0);
    let a = serde_json::to_string(&run(&c, &prices()).unwrap()).unwrap();
    let b = serde_json::to_string(&run(&c, &prices()).unwrap()).unwrap();
    assert_eq!(a, b);
    let mut other = c.clone();
    other.seed = 8;
    let d = serde_json::to_string(&run(&other, &prices()).unwrap()).unwrap();
    assert_ne!(a, d);
}

#[test]
fn cost_per_million_is_the_cost_module_at_the_simulated_usage() {
    let mut c = cfg(SimProfile::Constant, 10.0, 3600.0);
    c.spacing = Spacing::Uniform;
    c.inputs.lambda_duration = Linear::fixed(99.2, 0.0);
    c.inputs.lambda_init_ms = Dist::Fixed(0.0);
    c.inputs.lambda_memory_mb = 2048.0;
    c.k8s.min_nodes = 2;
    c.inputs.words = inputs::Words::Mix {
        short: 1,
        medium: 0,
        long: 0,
    };
    let p = prices();
    let r = run(&c, &p).unwrap();
    // 100 ms billed (99.2 rounded up) at 2 GB per request, as `bench cost` prices it.
    let w = Workload {
        lambda_ms: 99.2,
        lambda_memory_mb: 2048.0,
        arch: Arch::X86_64,
        request_kb: (10.0 * 6.0 + 12.0) / 1024.0,
        response_kb: 0.4,
        instance_type: "c5.2xlarge".into(),
        nodes: Some(2),
        pod_rps: 1.0,
        pod_cpu_m: 2000,
        min_nodes: 1,
        peak_factor: 1.0,
        new_connections_per_request: 0.1,
        free_tier: false,
    };
    let b = cost::bill(10.0, &w, &p).unwrap();
    assert_close(r.lambda.cost.per_million, b.lambda_per_million, 1e-6);
    // Two nodes all along (no scale-out at 10 req/s): the same as two fixed nodes.
    assert_close(r.k8s.cost.per_million, b.k8s_per_million, 1e-3);
}

/// `a` differs from `b` by less than `rel` of `b`.
#[track_caller]
fn assert_close(a: f64, b: f64, rel: f64) {
    assert!((a - b).abs() / b < rel, "{a} vs {b}");
}
