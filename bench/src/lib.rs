//! The benchmark's core, testable without the network: the send schedule of each load
//! profile ([`schedule`]), the request texts ([`corpus`]), the latency statistics
//! ([`stats`]), where the endpoints are ([`targets`]), and the load generator that
//! sends on schedule and records every request ([`runner`]). [`loopback`] is a tiny
//! HTTP server for the tests and `bench selftest`. [`report`] turns a `results.json`
//! into `report.md` and its plots.
//!
//! Around the load: [`check`] is the integration suite against live endpoints
//! (`bench check`); [`lambda_logs`] reads the Lambda's REPORT lines and
//! [`lambda_metrics`] its CloudWatch metrics, [`server_metrics`] the server's
//! Prometheus `/metrics` (`bench metrics`); [`platform`] gathers what the platforms
//! recorded after a run, and [`coldstart`] matches cold starts to the requests they
//! delayed. [`cost`] prices a month of traffic on each side (`bench cost`).
//! [`simulate`] is a discrete-event simulation of both sides past what one machine can
//! serve, driven by a run's distributions (`bench simulate`, `bench validate`).

pub mod check;
pub mod client;
pub mod coldstart;
pub mod corpus;
pub mod cost;
pub mod lambda_logs;
pub mod lambda_metrics;
pub mod loopback;
pub mod platform;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod server_metrics;
pub mod simulate;
pub mod stats;
pub mod targets;

use std::time::Duration;

use anyhow::{Context, bail};

/// Parses a duration such as `30s`, `500ms`, `2m`, `1h`, `1.5s` or a bare number of
/// seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 30s, 500ms or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("unknown duration unit {other:?} in {s:?} (use ms, s, m or h)"),
    };
    if !secs.is_finite() || secs < 0.0 {
        bail!("{s:?} is not a duration");
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }
}
