//! The cost model: what a month of traffic costs on each side, per million requests,
//! and the request rate where the two cross.
//!
//! - **Lambda**: requests, plus GB-seconds of billed duration (rounded up to the
//!   millisecond per invocation, init included: see the prices file), tiered by the
//!   month's total; API Gateway's HTTP API per request, metered in 512 KB increments;
//!   data out.
//! - **Kubernetes**: the EKS control plane per hour; the nodes (enough for the peak
//!   rate at the measured per-pod throughput, or a fixed count); the Service's load
//!   balancer per hour and per LCU; data out.
//!
//! Prices come from `bench/prices/aws-<region>.toml`, each with its source and date.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The built-in price file (us-east-1).
pub const US_EAST_1: &str = include_str!("../prices/aws-us-east-1.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Tier {
    /// The tier covers the month's GB-seconds up to this total (the last has none).
    pub up_to_gb_s: Option<f64>,
    pub per_gb_s: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LambdaPrices {
    pub source: String,
    pub as_of: String,
    pub per_million_requests: f64,
    pub billing_granularity_ms: f64,
    pub free_tier_requests: f64,
    pub free_tier_gb_s: f64,
    pub x86_64: Vec<Tier>,
    pub arm64: Vec<Tier>,
    pub provisioned_per_gb_s: f64,
    pub provisioned_duration_per_gb_s: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpApiPrices {
    pub source: String,
    pub as_of: String,
    pub per_million_first_300m: f64,
    pub per_million_after: f64,
    pub metering_kb: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EksPrices {
    pub source: String,
    pub as_of: String,
    pub cluster_per_hour: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Instance {
    pub per_hour: f64,
    pub vcpus: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ec2Prices {
    pub source: String,
    pub as_of: String,
    pub instances: BTreeMap<String, Instance>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoadBalancerPrices {
    pub source: String,
    pub as_of: String,
    pub per_hour: f64,
    pub per_lcu_hour: f64,
    pub lcu_new_connections_per_s: f64,
    pub lcu_processed_gb_per_hour: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TransferPrices {
    pub source: String,
    pub as_of: String,
    pub out_per_gb: f64,
    pub free_gb_per_month: f64,
}

/// One region's prices.
#[derive(Debug, Clone, Deserialize)]
pub struct Prices {
    pub region: String,
    pub hours_per_month: f64,
    pub lambda: LambdaPrices,
    pub api_gateway_http: HttpApiPrices,
    pub eks: EksPrices,
    pub ec2: Ec2Prices,
    pub load_balancer: LoadBalancerPrices,
    pub data_transfer: TransferPrices,
}

impl Prices {
    pub fn parse(text: &str, what: &str) -> anyhow::Result<Self> {
        toml::from_str(text).with_context(|| format!("reading the prices in {what}"))
    }

    /// The file at `path`, or the built-in us-east-1 prices.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            Some(p) => Self::parse(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
                &p.display().to_string(),
            ),
            None => Self::parse(US_EAST_1, "bench/prices/aws-us-east-1.toml"),
        }
    }

    pub fn seconds_per_month(&self) -> f64 {
        self.hours_per_month * 3600.0
    }

    /// `source (as of)` lines, for the printout.
    pub fn sources(&self) -> Vec<String> {
        [
            ("Lambda", &self.lambda.source, &self.lambda.as_of),
            (
                "API Gateway",
                &self.api_gateway_http.source,
                &self.api_gateway_http.as_of,
            ),
            ("EKS", &self.eks.source, &self.eks.as_of),
            ("EC2", &self.ec2.source, &self.ec2.as_of),
            (
                "load balancer",
                &self.load_balancer.source,
                &self.load_balancer.as_of,
            ),
            (
                "data transfer",
                &self.data_transfer.source,
                &self.data_transfer.as_of,
            ),
        ]
        .iter()
        .map(|(what, src, at)| format!("{what}: {src} (as of {at})"))
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    Arm64,
}

/// What is being priced, besides the rate.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// Billed duration per invocation, ms, before rounding (init included, as a
    /// REPORT line counts it).
    pub lambda_ms: f64,
    pub lambda_memory_mb: f64,
    pub arch: Arch,
    /// Request and response sizes, KB (API Gateway metering, data out).
    pub request_kb: f64,
    pub response_kb: f64,
    pub instance_type: String,
    /// A fixed node count, or `None` for enough nodes for the peak.
    pub nodes: Option<u32>,
    /// Requests per second one pod serves within the latency target.
    pub pod_rps: f64,
    /// CPU one pod requests, millicores.
    pub pod_cpu_m: u32,
    /// The fewest nodes (the node group's minimum).
    pub min_nodes: u32,
    /// Peak rate over mean rate: nodes are sized for the peak.
    pub peak_factor: f64,
    /// New load balancer connections per request (1: no keep-alive).
    pub new_connections_per_request: f64,
    pub free_tier: bool,
}

/// A month at one mean rate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bill {
    pub rate: f64,
    pub requests_per_month: f64,
    pub lambda: BTreeMap<&'static str, f64>,
    pub lambda_total: f64,
    pub k8s: BTreeMap<&'static str, f64>,
    pub k8s_total: f64,
    pub nodes: u32,
    pub lambda_per_million: f64,
    pub k8s_per_million: f64,
}

/// The cost of `gb_s` GB-seconds in a month under tiered prices.
pub fn tiered(gb_s: f64, tiers: &[Tier]) -> f64 {
    let mut cost = 0.0;
    let mut below = 0.0;
    for t in tiers {
        let top = t.up_to_gb_s.unwrap_or(f64::INFINITY);
        if gb_s <= below {
            break;
        }
        cost += (gb_s.min(top) - below) * t.per_gb_s;
        below = top;
    }
    cost
}

/// Billed ms of one invocation: rounded up to the billing granularity.
pub fn billed_ms(ms: f64, granularity_ms: f64) -> f64 {
    (ms / granularity_ms).ceil() * granularity_ms
}

/// EKS-optimized AMI CPU reservation (kube-reserved): 6% of the first core, 1% of the
/// second, 0.5% of the next two, 0.25% of the rest (the same rule as the local
/// kubelet's node model).
pub fn allocatable_m(vcpus: u32) -> u32 {
    let reserved: f64 = (0..vcpus)
        .map(|core| match core {
            0 => 60.0,
            1 => 10.0,
            2 | 3 => 5.0,
            _ => 2.5,
        })
        .sum();
    vcpus * 1000 - reserved.round() as u32
}

/// Nodes for a mean `rate` (sized for `rate × peak_factor`).
pub fn nodes_for(rate: f64, w: &Workload, instance: &Instance) -> anyhow::Result<u32> {
    if let Some(n) = w.nodes {
        return Ok(n);
    }
    let pods_per_node = allocatable_m(instance.vcpus) / w.pod_cpu_m.max(1);
    if pods_per_node == 0 {
        bail!(
            "a pod requesting {}m CPU fits no {} node ({}m allocatable)",
            w.pod_cpu_m,
            w.instance_type,
            allocatable_m(instance.vcpus)
        );
    }
    if w.pod_rps <= 0.0 {
        bail!("the per-pod throughput must be above 0 req/s");
    }
    let pods = (rate * w.peak_factor / w.pod_rps).ceil() as u32;
    Ok(pods.div_ceil(pods_per_node).max(w.min_nodes))
}

/// The month at mean `rate` req/s.
pub fn bill(rate: f64, w: &Workload, p: &Prices) -> anyhow::Result<Bill> {
    let instance = p.ec2.instances.get(&w.instance_type).with_context(|| {
        format!(
            "no price for instance type {:?} in the prices file (known: {})",
            w.instance_type,
            p.ec2
                .instances
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let requests = rate * p.seconds_per_month();
    let billed = billed_ms(w.lambda_ms, p.lambda.billing_granularity_ms);
    let gb_s = requests * billed / 1000.0 * w.lambda_memory_mb / 1024.0;
    let lambda = lambda_month(requests, gb_s, requests, w, p);
    let nodes = nodes_for(rate, w, instance)?;
    let k8s = k8s_month(rate, f64::from(nodes) * p.hours_per_month, instance, w, p);
    let lambda_total: f64 = lambda.values().sum();
    let k8s_total: f64 = k8s.values().sum();
    let per_million = |total: f64| {
        if requests > 0.0 {
            total / requests * 1e6
        } else {
            f64::INFINITY
        }
    };
    Ok(Bill {
        rate,
        requests_per_month: requests,
        lambda_per_million: per_million(lambda_total),
        k8s_per_million: per_million(k8s_total),
        lambda,
        lambda_total,
        k8s,
        k8s_total,
        nodes,
    })
}

/// Lambda's side of a month: `invocations` invocations billed `gb_s` GB-seconds in
/// all (each already rounded up to the billing granularity), behind `requests` API
/// Gateway requests (throttled ones included), and the data out. Shared by
/// [`bill`] and `bench simulate`.
pub fn lambda_month(
    invocations: f64,
    gb_s: f64,
    requests: f64,
    w: &Workload,
    p: &Prices,
) -> BTreeMap<&'static str, f64> {
    let free = |amount: f64, allowance: f64| {
        if w.free_tier {
            (amount - allowance).max(0.0)
        } else {
            amount
        }
    };
    let mut lambda = BTreeMap::new();
    let tiers = match w.arch {
        Arch::X86_64 => &p.lambda.x86_64,
        Arch::Arm64 => &p.lambda.arm64,
    };
    lambda.insert(
        "lambda_duration",
        tiered(free(gb_s, p.lambda.free_tier_gb_s), tiers),
    );
    lambda.insert(
        "lambda_requests",
        free(invocations, p.lambda.free_tier_requests) / 1e6 * p.lambda.per_million_requests,
    );
    let api = &p.api_gateway_http;
    let units = requests * (w.request_kb / api.metering_kb).ceil().max(1.0);
    let first = units.min(300e6);
    lambda.insert(
        "api_gateway",
        first / 1e6 * api.per_million_first_300m + (units - first) / 1e6 * api.per_million_after,
    );
    lambda.insert("data_out", data_out(requests, w, p));
    lambda
}

/// Data out to the internet for `requests` answers.
fn data_out(requests: f64, w: &Workload, p: &Prices) -> f64 {
    let out_gb = requests * w.response_kb / 1024.0 / 1024.0;
    let billable = if w.free_tier {
        (out_gb - p.data_transfer.free_gb_per_month).max(0.0)
    } else {
        out_gb
    };
    billable * p.data_transfer.out_per_gb
}

/// Kubernetes' side of a month at mean `rate` req/s: the control plane, `node_hours`
/// of `instance`, the load balancer (hours and LCUs), the data out. Shared by
/// [`bill`] and `bench simulate`.
pub fn k8s_month(
    rate: f64,
    node_hours: f64,
    instance: &Instance,
    w: &Workload,
    p: &Prices,
) -> BTreeMap<&'static str, f64> {
    let hours = p.hours_per_month;
    let mut k8s = BTreeMap::new();
    k8s.insert("eks_control_plane", p.eks.cluster_per_hour * hours);
    k8s.insert("nodes", node_hours * instance.per_hour);
    let lb = &p.load_balancer;
    let processed_gb_per_hour = rate * 3600.0 * (w.request_kb + w.response_kb) / 1024.0 / 1024.0;
    let lcus = (rate * w.new_connections_per_request / lb.lcu_new_connections_per_s)
        .max(processed_gb_per_hour / lb.lcu_processed_gb_per_hour);
    k8s.insert(
        "load_balancer",
        lb.per_hour * hours + lcus * lb.per_lcu_hour * hours,
    );
    k8s.insert("data_out", data_out(rate * p.seconds_per_month(), w, p));
    k8s
}

/// The lowest mean rate (req/s, within 0.1%) from which Kubernetes is no dearer than
/// Lambda, searched up to `max_rate`; `None` if Lambda stays cheaper up to there.
/// Node counts step up with the rate, so Kubernetes can turn dearer again right after
/// a step: the answer is where it first stops being dearer.
pub fn break_even(w: &Workload, p: &Prices, max_rate: f64) -> anyhow::Result<Option<f64>> {
    let k8s_dearer = |r: f64| -> anyhow::Result<bool> {
        let b = bill(r, w, p)?;
        Ok(b.k8s_total > b.lambda_total)
    };
    // Log-spaced scan for the first rate where Kubernetes is no dearer, then bisection
    // between it and the scan point before.
    let mut lo = 0.001;
    if !k8s_dearer(lo)? {
        return Ok(Some(0.0));
    }
    let mut hi = None;
    let mut r = lo;
    while r <= max_rate {
        if !k8s_dearer(r)? {
            hi = Some(r);
            break;
        }
        lo = r;
        r *= 1.05;
    }
    let Some(mut hi) = hi else {
        return Ok(None);
    };
    while (hi - lo) / hi > 1e-3 {
        let mid = (lo + hi) / 2.0;
        if k8s_dearer(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(hi))
}

/// What a live run measured that the model needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measured {
    /// Mean billed ms per invocation (init included), from the REPORT lines.
    pub lambda_ms: Option<f64>,
    pub lambda_memory_mb: Option<f64>,
    /// The most 2xx answers per second per pod in a second whose p99 met the target.
    pub pod_rps: Option<f64>,
    /// Mean request body, KB.
    pub request_kb: Option<f64>,
}

/// Reads what the model needs from a run's results.json.
pub fn measured(results: &serde_json::Value, p99_target_ms: f64) -> Measured {
    let mut m = Measured::default();
    let lambda = &results["platform"]["lambda"];
    if let (Some(billed), Some(n)) = (lambda["billed_ms"].as_f64(), lambda["invocations"].as_f64())
        && n > 0.0
    {
        m.lambda_ms = Some(billed / n);
    }
    m.lambda_memory_mb = lambda["memory_mb"].as_f64().filter(|v| *v > 0.0);
    let pods = results["platform"]["k8s"]["pods_max"]
        .as_f64()
        .unwrap_or(0.0);
    if pods > 0.0
        && let Some(seconds) = results["backends"]["k8s"]["per_second"].as_array()
    {
        m.pod_rps = seconds
            .iter()
            .filter(|s| {
                s["errors"].as_f64() == Some(0.0)
                    && s["p99_ms"].as_f64().is_some_and(|p| p <= p99_target_ms)
            })
            .filter_map(|s| s["requests"].as_f64())
            .fold(None, |best: Option<f64>, n| {
                Some(best.map_or(n, |b| b.max(n)))
            })
            .map(|n| n / pods);
    }
    let words: Vec<f64> = results["records"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["words"].as_f64()).collect())
        .unwrap_or_default();
    if !words.is_empty() {
        // {"text": "..."}: about 6 bytes per word plus the braces.
        let mean = words.iter().sum::<f64>() / words.len() as f64;
        m.request_kb = Some((mean * 6.0 + 12.0) / 1024.0);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        Prices::load(None).unwrap()
    }

    fn workload() -> Workload {
        Workload {
            lambda_ms: 99.2,
            lambda_memory_mb: 2048.0,
            arch: Arch::X86_64,
            request_kb: 0.5,
            response_kb: 0.1,
            instance_type: "t3.large".into(),
            nodes: None,
            pod_rps: 20.0,
            pod_cpu_m: 1000,
            min_nodes: 2,
            peak_factor: 1.0,
            new_connections_per_request: 0.0,
            free_tier: false,
        }
    }

    #[test]
    fn the_built_in_prices_parse_and_cite_their_sources() {
        let p = prices();
        assert_eq!(p.region, "us-east-1");
        assert_eq!(p.hours_per_month, 730.0);
        assert!(p.ec2.instances.contains_key("t3.large"));
        assert!(
            p.sources()
                .iter()
                .all(|s| s.contains("https://aws.amazon.com/"))
        );
    }

    #[test]
    fn billed_duration_rounds_up_per_invocation() {
        assert_eq!(billed_ms(99.2, 1.0), 100.0);
        assert_eq!(billed_ms(100.0, 1.0), 100.0);
        assert_eq!(billed_ms(0.3, 1.0), 1.0);
        assert_eq!(billed_ms(101.0, 100.0), 200.0);
    }

    #[test]
    fn tiers_price_each_part_of_the_month_at_its_rate() {
        let tiers = [
            Tier {
                up_to_gb_s: Some(10.0),
                per_gb_s: 1.0,
            },
            Tier {
                up_to_gb_s: Some(30.0),
                per_gb_s: 0.5,
            },
            Tier {
                up_to_gb_s: None,
                per_gb_s: 0.25,
            },
        ];
        assert_eq!(tiered(5.0, &tiers), 5.0);
        assert_eq!(tiered(20.0, &tiers), 10.0 + 5.0);
        assert_eq!(tiered(40.0, &tiers), 10.0 + 10.0 + 2.5);
        assert_eq!(tiered(0.0, &tiers), 0.0);
    }

    /// 1 req/s for a month, 2 GB, 99.2 ms → 100 ms billed, by hand.
    #[test]
    fn a_month_of_lambda_by_hand() {
        let p = prices();
        let b = bill(1.0, &workload(), &p).unwrap();
        let requests = 730.0 * 3600.0;
        assert_eq!(b.requests_per_month, requests);
        let gb_s = requests * 0.1 * 2.0;
        assert!((b.lambda["lambda_duration"] - gb_s * 0.0000166667).abs() < 1e-9);
        assert!((b.lambda["lambda_requests"] - requests / 1e6 * 0.20).abs() < 1e-9);
        assert!((b.lambda["api_gateway"] - requests / 1e6 * 1.00).abs() < 1e-9);
    }

    #[test]
    fn api_gateway_meters_in_512_kb_steps() {
        let p = prices();
        let mut w = workload();
        w.request_kb = 600.0;
        let b = bill(1.0, &w, &p).unwrap();
        // Two units per request.
        assert!((b.lambda["api_gateway"] - 2.0 * b.requests_per_month / 1e6).abs() < 1e-9);
        w.request_kb = 512.0;
        let b = bill(1.0, &w, &p).unwrap();
        assert!((b.lambda["api_gateway"] - b.requests_per_month / 1e6).abs() < 1e-9);
    }

    #[test]
    fn the_free_tier_is_off_unless_asked() {
        let p = prices();
        let mut w = workload();
        let paid = bill(0.1, &w, &p).unwrap();
        w.free_tier = true;
        let free = bill(0.1, &w, &p).unwrap();
        // 262,800 requests and 52,560 GB-s a month: inside the free tier.
        assert!(paid.lambda["lambda_duration"] > 0.0);
        assert_eq!(free.lambda["lambda_duration"], 0.0);
        assert_eq!(free.lambda["lambda_requests"], 0.0);
    }

    #[test]
    fn kubernetes_pays_the_control_plane_nodes_and_balancer_by_the_hour() {
        let p = prices();
        let b = bill(1.0, &workload(), &p).unwrap();
        assert_eq!(b.nodes, 2, "the node group's minimum");
        assert!((b.k8s["eks_control_plane"] - 73.0).abs() < 1e-9);
        assert!((b.k8s["nodes"] - 2.0 * 0.0832 * 730.0).abs() < 1e-9);
        // 100 req/s at 20 per pod, one pod per t3.large: 5 nodes.
        assert_eq!(bill(100.0, &workload(), &p).unwrap().nodes, 5);
        let mut w = workload();
        w.nodes = Some(7);
        assert_eq!(bill(100.0, &w, &p).unwrap().nodes, 7);
    }

    #[test]
    fn pods_that_fit_no_node_are_an_error() {
        let p = prices();
        let mut w = workload();
        w.pod_cpu_m = 2000;
        let err = bill(1.0, &w, &p).unwrap_err().to_string();
        assert!(err.contains("1930m allocatable"), "{err}");
        w.instance_type = "z9.huge".into();
        let err = bill(1.0, &w, &p).unwrap_err().to_string();
        assert!(err.contains("z9.huge") && err.contains("t3.large"), "{err}");
    }

    #[test]
    fn the_break_even_is_where_the_bills_cross() {
        let p = prices();
        let mut w = workload();
        w.nodes = Some(2);
        let r = break_even(&w, &p, 10_000.0).unwrap().unwrap();
        let below = bill(r * 0.99, &w, &p).unwrap();
        let above = bill(r * 1.01, &w, &p).unwrap();
        assert!(below.k8s_total > below.lambda_total);
        assert!(above.k8s_total <= above.lambda_total);
        // Lambda's cost per request is constant, the cluster's fixed: r ≈ fixed / unit.
        let unit = bill(1.0, &w, &p).unwrap().lambda_total;
        let fixed = bill(1.0, &w, &p).unwrap().k8s_total;
        assert!(
            (r - fixed / unit).abs() / r < 0.01,
            "{r} vs {}",
            fixed / unit
        );
    }

    #[test]
    fn measured_inputs_come_from_a_run() {
        let run = serde_json::json!({
            "platform": {
                "lambda": {"billed_ms": 1000.0, "invocations": 10, "memory_mb": 2048},
                "k8s": {"pods_max": 2},
            },
            "backends": {"k8s": {"per_second": [
                {"second": 0, "requests": 30, "errors": 0, "p99_ms": 80.0},
                {"second": 1, "requests": 50, "errors": 0, "p99_ms": 400.0},
                {"second": 2, "requests": 40, "errors": 1, "p99_ms": 90.0},
            ]}},
            "records": [{"words": 10}, {"words": 30}],
        });
        let m = measured(&run, 100.0);
        assert_eq!(m.lambda_ms, Some(100.0));
        assert_eq!(m.lambda_memory_mb, Some(2048.0));
        // Only second 0 met the target with no errors: 30 req/s over 2 pods.
        assert_eq!(m.pod_rps, Some(15.0));
        assert!((m.request_kb.unwrap() - (20.0 * 6.0 + 12.0) / 1024.0).abs() < 1e-12);
    }
}
