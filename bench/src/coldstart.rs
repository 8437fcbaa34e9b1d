//! Cold starts, matched to the requests they delayed.
//!
//! - **Lambda**: a REPORT line with `Init Duration` is one new execution environment.
//!   The request it served is the one whose answer came back when the line was logged
//!   (the line is written at the end of the invocation) and that waited at least the
//!   init: only that request waits for the init, since Lambda sends concurrent
//!   requests to other environments.
//! - **Kubernetes**: a pod that started during the run. A new pod takes traffic only
//!   once its readiness probe passes (after the model is loaded and warmed up), so it
//!   delays no request by itself; it is listed with no requests.
//! - Without REPORT lines (no log access), the Lambda front's `x-lambda-cold: true`
//!   header (local default only) marks the request.

use serde::Serialize;

use crate::lambda_logs::Invocation;
use crate::stats::Record;

/// How far apart a REPORT line's log time and the end of its request may be (clock
/// skew, API Gateway's hop, the log timestamp's granularity).
pub const MATCH_WINDOW_MS: f64 = 2_000.0;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColdStart {
    /// `lambda` or `k8s`.
    pub backend: String,
    /// When the environment's init (or the pod) started, ms from the run's start.
    pub at_ms: f64,
    pub init_ms: Option<f64>,
    /// `report` (a REPORT line), `header` (`x-lambda-cold`), `pod` (a pod's start).
    pub source: &'static str,
    /// The invocation's request id, the Lambda instance, or the pod's name.
    pub instance: Option<String>,
    /// The `i` of each request it delayed.
    pub requests: Vec<usize>,
}

fn answered_by_lambda(r: &Record) -> bool {
    r.backend == "lambda" || r.served_by.as_deref() == Some("lambda")
}

/// Cold starts from the REPORT lines of a run that started at `run_start_unix_ms`,
/// each matched to the record it delayed (at most one record per cold start).
pub fn from_reports(
    invocations: &[Invocation],
    run_start_unix_ms: f64,
    records: &[Record],
) -> Vec<ColdStart> {
    let mut taken = vec![false; records.len()];
    invocations
        .iter()
        .filter_map(|inv| {
            let init = inv.init_ms?;
            let end = inv.logged_at_ms as f64 - run_start_unix_ms;
            let duration = inv.duration_ms.unwrap_or(0.0);
            let best = records
                .iter()
                .enumerate()
                .filter(|(k, r)| !taken[*k] && answered_by_lambda(r) && r.service_ms >= init * 0.9)
                .map(|(k, r)| (k, (r.sent_ms + r.service_ms - end).abs()))
                .filter(|(_, gap)| *gap <= MATCH_WINDOW_MS)
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let requests = match best {
                Some((k, _)) => {
                    taken[k] = true;
                    vec![records[k].i]
                }
                None => Vec::new(),
            };
            Some(ColdStart {
                backend: "lambda".into(),
                at_ms: end - duration - init,
                init_ms: Some(init),
                source: "report",
                instance: Some(inv.request_id.clone()),
                requests,
            })
        })
        .collect()
}

/// Cold starts from the Lambda front's `x-lambda-cold` header.
pub fn from_headers(records: &[Record]) -> Vec<ColdStart> {
    records
        .iter()
        .filter(|r| r.cold == Some(true))
        .map(|r| ColdStart {
            backend: "lambda".into(),
            at_ms: r.sent_ms,
            init_ms: None,
            source: "header",
            instance: r.lambda_instance.clone(),
            requests: vec![r.i],
        })
        .collect()
}

/// A pod that started inside the run (`started_ms` from the run's start).
pub fn pod_start(name: &str, started_ms: f64) -> ColdStart {
    ColdStart {
        backend: "k8s".into(),
        at_ms: started_ms,
        init_ms: None,
        source: "pod",
        instance: Some(name.to_string()),
        requests: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, backend: &str, sent_ms: f64, service_ms: f64) -> Record {
        Record {
            latency_ms: service_ms,
            service_ms,
            status: Some(200),
            ..Record::new(i, backend, "short", 3, sent_ms, sent_ms)
        }
    }

    fn invocation(id: &str, logged_at_ms: i64, duration: f64, init: Option<f64>) -> Invocation {
        Invocation {
            request_id: id.into(),
            logged_at_ms,
            duration_ms: Some(duration),
            billed_ms: Some(duration.ceil()),
            memory_mb: Some(1024),
            max_memory_used_mb: Some(100),
            init_ms: init,
            status: None,
            error_type: None,
        }
    }

    #[test]
    fn a_cold_report_matches_the_request_that_waited_for_it() {
        let start = 1_000_000.0;
        let records = vec![
            // Warm, ends at 1030 ms.
            record(0, "lambda", 1000.0, 30.0),
            // Waited 800 ms of init + 40 ms: ends at 1900 ms.
            record(1, "lambda", 1060.0, 840.0),
            // A Kubernetes request ending at the same time is not a candidate.
            record(1, "k8s", 1060.0, 840.0),
            // Another slow one far from the log time.
            record(2, "lambda", 5000.0, 900.0),
        ];
        let reports = vec![
            invocation("warm", 1_001_031, 29.0, None),
            invocation("cold", 1_001_905, 40.0, Some(800.0)),
        ];
        let cold = from_reports(&reports, start, &records);
        assert_eq!(cold.len(), 1);
        assert_eq!(cold[0].requests, vec![1]);
        assert_eq!(cold[0].source, "report");
        assert_eq!(cold[0].instance.as_deref(), Some("cold"));
        // Logged at 1905 ms, 40 ms of invocation, 800 ms of init before it.
        assert!((cold[0].at_ms - 1065.0).abs() < 1e-9);
    }

    #[test]
    fn each_request_is_delayed_by_one_cold_start_at_most() {
        let records = vec![record(0, "lambda", 0.0, 1000.0)];
        let reports = vec![
            invocation("a", 1000, 100.0, Some(880.0)),
            invocation("b", 1001, 100.0, Some(880.0)),
        ];
        let cold = from_reports(&reports, 0.0, &records);
        assert_eq!(cold.len(), 2);
        assert_eq!(cold[0].requests, vec![0]);
        assert!(cold[1].requests.is_empty());
    }

    #[test]
    fn a_report_out_of_the_window_delays_nothing() {
        let records = vec![record(0, "lambda", 0.0, 1000.0)];
        let reports = vec![invocation("late", 10_000, 100.0, Some(900.0))];
        assert!(from_reports(&reports, 0.0, &records)[0].requests.is_empty());
    }

    #[test]
    fn headers_mark_cold_requests_without_reports() {
        let mut r = record(3, "lambda", 10.0, 500.0);
        r.cold = Some(true);
        r.lambda_instance = Some("env-1".into());
        let cold = from_headers(&[record(0, "lambda", 0.0, 5.0), r]);
        assert_eq!(cold.len(), 1);
        assert_eq!(cold[0].requests, vec![3]);
        assert_eq!(cold[0].source, "header");
    }
}
