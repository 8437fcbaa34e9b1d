//! The Lambda's CloudWatch metrics (`AWS/Lambda`, by `FunctionName`), read with
//! `GetMetricData` over one period spanning the window, so each statistic is one
//! number for the whole span (percentiles cannot be merged across periods).

use std::time::SystemTime;

use anyhow::Context;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use serde::Serialize;

/// What CloudWatch says of a function over a window; `None` where it has no
/// datapoint (no traffic, or a stand-in that publishes none).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LambdaMetrics {
    pub invocations: Option<f64>,
    pub errors: Option<f64>,
    pub throttles: Option<f64>,
    pub duration_p50_ms: Option<f64>,
    pub duration_p99_ms: Option<f64>,
    pub concurrent_executions_max: Option<f64>,
}

impl LambdaMetrics {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `(query id, metric name, statistic)` of each figure.
const QUERIES: [(&str, &str, &str); 6] = [
    ("invocations", "Invocations", "Sum"),
    ("errors", "Errors", "Sum"),
    ("throttles", "Throttles", "Sum"),
    ("duration_p50", "Duration", "p50"),
    ("duration_p99", "Duration", "p99"),
    ("concurrency", "ConcurrentExecutions", "Maximum"),
];

/// The period covering `[start, end]`: whole minutes, as CloudWatch wants.
pub fn period_s(start: SystemTime, end: SystemTime) -> i32 {
    let secs = end.duration_since(start).unwrap_or_default().as_secs();
    (secs.div_ceil(60).max(1) * 60).min(i32::MAX as u64) as i32
}

/// A CloudWatch client, configured as the logs client is
/// ([`crate::lambda_logs::sdk_config`]).
pub async fn client(endpoint: Option<&str>, region: Option<&str>) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&crate::lambda_logs::sdk_config(endpoint, region).await)
}

pub async fn fetch(
    cw: &aws_sdk_cloudwatch::Client,
    function_name: &str,
    start: SystemTime,
    end: SystemTime,
) -> anyhow::Result<LambdaMetrics> {
    let period = period_s(start, end);
    let queries = QUERIES
        .iter()
        .map(|(id, name, stat)| {
            MetricDataQuery::builder()
                .id(*id)
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace("AWS/Lambda")
                                .metric_name(*name)
                                .dimensions(
                                    Dimension::builder()
                                        .name("FunctionName")
                                        .value(function_name)
                                        .build(),
                                )
                                .build(),
                        )
                        .period(period)
                        .stat(*stat)
                        .build(),
                )
                .build()
        })
        .collect::<Vec<_>>();
    let out = cw
        .get_metric_data()
        .set_metric_data_queries(Some(queries))
        .start_time(start.into())
        .end_time(end.into())
        .send()
        .await
        .map_err(aws_sdk_cloudwatch::Error::from)
        .with_context(|| format!("cloudwatch:GetMetricData for {function_name}"))?;
    let mut m = LambdaMetrics::default();
    for r in out.metric_data_results() {
        // One period spans the window; sums over the datapoints all the same, in
        // case the service split it.
        let values = r.values();
        if values.is_empty() {
            continue;
        }
        let sum: f64 = values.iter().sum();
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        match r.id().unwrap_or("") {
            "invocations" => m.invocations = Some(sum),
            "errors" => m.errors = Some(sum),
            "throttles" => m.throttles = Some(sum),
            "duration_p50" => m.duration_p50_ms = Some(max),
            "duration_p99" => m.duration_p99_ms = Some(max),
            "concurrency" => m.concurrent_executions_max = Some(max),
            _ => {}
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_period_spans_the_window_in_whole_minutes() {
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(period_s(t, t + Duration::from_secs(10)), 60);
        assert_eq!(period_s(t, t + Duration::from_secs(60)), 60);
        assert_eq!(period_s(t, t + Duration::from_secs(61)), 120);
        assert_eq!(period_s(t, t), 60);
    }
}
