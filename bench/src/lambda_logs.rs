//! The Lambda's REPORT lines, read the way an operator reads them: FilterLogEvents on
//! the function's log group (CloudWatch Logs on AWS; moto's Logs API locally, where the
//! API Gateway front ships its emulator's lines, so the same code path runs).
//!
//! A REPORT line is Lambda's own account of one invocation:
//!
//! ```text
//! REPORT RequestId: 8f50…  Duration: 15.74 ms  Billed Duration: 16 ms  Memory Size: 128 MB  Max Memory Used: 56 MB  Init Duration: 130.49 ms
//! ```
//!
//! (fields separated by tabs). `Init Duration` is there only on a cold start;
//! `Status: timeout|error` (and `Error Type`) only on a failed one; an X-Ray segment
//! may follow.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

use crate::stats::{Percentiles, histogram, micros};

/// One invocation, from its REPORT line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invocation {
    pub request_id: String,
    /// The log event's time (unix ms): when the invocation ended, within a few ms.
    pub logged_at_ms: i64,
    pub duration_ms: Option<f64>,
    pub billed_ms: Option<f64>,
    pub memory_mb: Option<u32>,
    pub max_memory_used_mb: Option<u32>,
    /// Present on a cold start: the new environment's init.
    pub init_ms: Option<f64>,
    /// `timeout` or `error` on a failed invocation.
    pub status: Option<String>,
    pub error_type: Option<String>,
}

fn millis(v: &str) -> Option<f64> {
    v.trim().strip_suffix("ms")?.trim().parse().ok()
}

fn megabytes(v: &str) -> Option<u32> {
    v.trim().strip_suffix("MB")?.trim().parse().ok()
}

/// Parses a REPORT line; `None` for any other log line.
pub fn parse_report(message: &str, logged_at_ms: i64) -> Option<Invocation> {
    let rest = message.trim_start().strip_prefix("REPORT ")?;
    let mut inv = Invocation {
        request_id: String::new(),
        logged_at_ms,
        duration_ms: None,
        billed_ms: None,
        memory_mb: None,
        max_memory_used_mb: None,
        init_ms: None,
        status: None,
        error_type: None,
    };
    // Fields are tab-separated `Key: value`; the X-Ray part may follow on a new line.
    for field in rest.split(['\t', '\n']) {
        let Some((key, value)) = field.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "RequestId" => inv.request_id = value.to_string(),
            "Duration" => inv.duration_ms = millis(value),
            "Billed Duration" => inv.billed_ms = millis(value),
            "Memory Size" => inv.memory_mb = megabytes(value),
            "Max Memory Used" => inv.max_memory_used_mb = megabytes(value),
            "Init Duration" => inv.init_ms = millis(value),
            "Status" => inv.status = Some(value.to_string()),
            "Error Type" => inv.error_type = Some(value.to_string()),
            _ => {}
        }
    }
    (!inv.request_id.is_empty()).then_some(inv)
}

/// What the REPORT lines of a span add up to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LambdaSummary {
    pub invocations: u64,
    /// Invocations with a `Status` (timeout, error).
    pub errors: u64,
    pub cold_starts: u64,
    pub init_ms: Percentiles,
    pub duration_ms: Percentiles,
    pub billed_ms: f64,
    /// The function's memory size, from the lines (the largest seen).
    pub memory_mb: u32,
    /// Σ billed duration × memory: what the compute part of the bill counts.
    pub billed_gb_s: f64,
    pub max_memory_used_mb: u32,
}

pub fn summarize(invocations: &[Invocation]) -> LambdaSummary {
    let mut init = histogram();
    let mut duration = histogram();
    let mut billed_ms = 0.0;
    let mut billed_gb_s = 0.0;
    for inv in invocations {
        if let Some(ms) = inv.init_ms {
            init.record(micros(ms)).expect("auto-resizing histogram");
        }
        if let Some(ms) = inv.duration_ms {
            duration
                .record(micros(ms))
                .expect("auto-resizing histogram");
        }
        let billed = inv.billed_ms.unwrap_or(0.0);
        billed_ms += billed;
        billed_gb_s += billed / 1000.0 * f64::from(inv.memory_mb.unwrap_or(0)) / 1024.0;
    }
    LambdaSummary {
        invocations: invocations.len() as u64,
        errors: invocations.iter().filter(|i| i.status.is_some()).count() as u64,
        cold_starts: invocations.iter().filter(|i| i.init_ms.is_some()).count() as u64,
        init_ms: Percentiles::of(&init),
        duration_ms: Percentiles::of(&duration),
        billed_ms,
        memory_mb: invocations
            .iter()
            .filter_map(|i| i.memory_mb)
            .max()
            .unwrap_or(0),
        billed_gb_s,
        max_memory_used_mb: invocations
            .iter()
            .filter_map(|i| i.max_memory_used_mb)
            .max()
            .unwrap_or(0),
    }
}

/// The log group Lambda writes a function's lines to.
pub fn log_group_of(function_name: &str) -> String {
    format!("/aws/lambda/{function_name}")
}

/// The stack's default region, used when neither `--region` nor the default chain
/// names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The stack's local AWS endpoint when `AWS_ENDPOINT_URL` is unset (`stack --endpoint`).
pub const LOCAL_ENDPOINT: &str = "http://127.0.0.1:5000";

/// Where the logs are, by the stack's own rule: its local target (moto at
/// `AWS_ENDPOINT_URL`, default [`LOCAL_ENDPOINT`]) unless `STACK_TARGET=aws`.
pub fn endpoint_from_env() -> Option<String> {
    if std::env::var("STACK_TARGET").is_ok_and(|t| t == "aws") {
        return None;
    }
    Some(std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| LOCAL_ENDPOINT.to_string()))
}

/// The SDK configuration of the CloudWatch clients: the default chain on AWS; on a
/// local endpoint (moto), as `stack` does, dummy credentials unless real ones are set;
/// the region from `region`, else the chain, else [`DEFAULT_REGION`].
pub async fn sdk_config(endpoint: Option<&str>, region: Option<&str>) -> aws_config::SdkConfig {
    let load = |region: Option<String>| {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r));
        }
        if let Some(url) = endpoint {
            loader = loader.endpoint_url(url);
        }
        if endpoint.is_some() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
                "test",
                "test",
                None,
                None,
                "bench-local",
            ));
        }
        loader.load()
    };
    let conf = load(region.map(str::to_string)).await;
    if conf.region().is_some() {
        return conf;
    }
    load(Some(DEFAULT_REGION.to_string())).await
}

/// A CloudWatch Logs client (see [`sdk_config`]).
pub async fn client(
    endpoint: Option<&str>,
    region: Option<&str>,
) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(&sdk_config(endpoint, region).await)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// Every REPORT line of `log_group` logged in `[start, end]`, oldest first.
pub async fn fetch(
    logs: &aws_sdk_cloudwatchlogs::Client,
    log_group: &str,
    start: SystemTime,
    end: SystemTime,
) -> anyhow::Result<Vec<Invocation>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = logs
            .filter_log_events()
            .log_group_name(log_group)
            .start_time(unix_ms(start))
            .end_time(unix_ms(end))
            .filter_pattern("REPORT")
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(aws_sdk_cloudwatchlogs::Error::from)
            .with_context(|| format!("logs:FilterLogEvents on {log_group}"))?;
        for e in page.events() {
            if let Some(inv) = parse_report(e.message().unwrap_or(""), e.timestamp().unwrap_or(0)) {
                out.push(inv);
            }
        }
        // The API may hand back the same token at the end of the data.
        match page.next_token() {
            Some(t) if token.as_deref() != Some(t) && !page.events().is_empty() => {
                token = Some(t.to_string());
            }
            _ => break,
        }
    }
    out.sort_by_key(|i| i.logged_at_ms);
    out.dedup_by(|a, b| a.request_id == b.request_id);
    Ok(out)
}

/// Like [`fetch`], polling until at least `want` lines are there or `wait` has passed:
/// lines reach CloudWatch seconds after the invocation (the local front ships them
/// once a second).
pub async fn fetch_at_least(
    logs: &aws_sdk_cloudwatchlogs::Client,
    log_group: &str,
    start: SystemTime,
    end: SystemTime,
    want: usize,
    wait: Duration,
) -> anyhow::Result<Vec<Invocation>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let got = fetch(logs, log_group, start, end).await?;
        if got.len() >= want || tokio::time::Instant::now() >= deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From AWS's documentation of the Lambda log format.
    const WARM: &str = "REPORT RequestId: 3604209a-e9a3-11e6-939a-754dd98c7be3\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 18 MB\t";
    const COLD: &str = "REPORT RequestId: 8f507cfc-xmpl-4697-b07a-ac58fc914c95\tDuration: 15.74 ms\tBilled Duration: 16 ms\tMemory Size: 128 MB\tMax Memory Used: 56 MB\tInit Duration: 130.49 ms\t\nXRAY TraceId: 1-5e34a614-10bdxmplf1fb44f07bc535a1\tSegmentId: 07f5xmpl2d1f6f85\tSampled: true\t";
    const TIMEOUT: &str = "REPORT RequestId: 1a2b\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 1024 MB\tMax Memory Used: 300 MB\tStatus: timeout";
    // What this project's emulator writes for a function error.
    const ERROR: &str =
        "REPORT RequestId: 77\tStatus: error\tError Type: Runtime.ExitError\tthe process exited";

    #[test]
    fn report_lines_parse_with_and_without_init() {
        let warm = parse_report(WARM, 5).unwrap();
        assert_eq!(warm.request_id, "3604209a-e9a3-11e6-939a-754dd98c7be3");
        assert_eq!(warm.duration_ms, Some(12.34));
        assert_eq!(warm.billed_ms, Some(13.0));
        assert_eq!(warm.memory_mb, Some(128));
        assert_eq!(warm.max_memory_used_mb, Some(18));
        assert_eq!(warm.init_ms, None);
        assert_eq!(warm.logged_at_ms, 5);
        let cold = parse_report(COLD, 0).unwrap();
        assert_eq!(cold.init_ms, Some(130.49));
        assert_eq!(cold.max_memory_used_mb, Some(56));
        let timeout = parse_report(TIMEOUT, 0).unwrap();
        assert_eq!(timeout.status.as_deref(), Some("timeout"));
        let error = parse_report(ERROR, 0).unwrap();
        assert_eq!(error.error_type.as_deref(), Some("Runtime.ExitError"));
        assert_eq!(error.duration_ms, None);
        assert!(parse_report("START RequestId: 1 Version: $LATEST", 0).is_none());
        assert!(parse_report("2024-01-01 INFO REPORT of the day", 0).is_none());
    }

    #[test]
    fn the_summary_bills_gb_seconds() {
        let lines: Vec<Invocation> = [WARM, COLD, TIMEOUT, ERROR]
            .iter()
            .map(|l| parse_report(l, 0).unwrap())
            .collect();
        let s = summarize(&lines);
        assert_eq!(s.invocations, 4);
        assert_eq!(s.errors, 2);
        assert_eq!(s.cold_starts, 1);
        assert_eq!(s.billed_ms, 13.0 + 16.0 + 3000.0);
        // 29 ms at 128 MB plus 3 s at 1 GB.
        let want = 0.029 * 0.125 + 3.0;
        assert!((s.billed_gb_s - want).abs() < 1e-9, "{}", s.billed_gb_s);
        assert_eq!(s.memory_mb, 1024);
        assert_eq!(s.max_memory_used_mb, 300);
        // 3 significant figures in the histogram.
        assert!((s.init_ms.max - 130.49).abs() < 0.2, "{}", s.init_ms.max);
        assert_eq!(s.duration_ms.count, 3);
    }
}
