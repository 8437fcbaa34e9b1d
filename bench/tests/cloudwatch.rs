//! The CloudWatch reads against moto: REPORT lines through FilterLogEvents (paged,
//! other lines and other windows left out) and the Lambda's metrics through
//! GetMetricData.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use bench::{lambda_logs, lambda_metrics};
use test_support::Moto;

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_lines_and_metrics_are_read_back() {
    let moto = Moto::start();
    let logs = lambda_logs::client(Some(&moto.url), Some("eu-west-1")).await;
    let group = lambda_logs::log_group_of("fn-a");
    logs.create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    logs.create_log_stream()
        .log_group_name(&group)
        .log_stream_name("2026/12/07/[$LATEST]abc")
        .send()
        .await
        .unwrap();
    let now = SystemTime::now();
    let at = |s: u64| ms(now - Duration::from_secs(600) + Duration::from_secs(s));
    let mut events = Vec::new();
    // 120 invocations, every 10th cold, with START/END lines around each, over 4 min.
    for i in 0..120u64 {
        let init = if i % 10 == 0 {
            "\tInit Duration: 250.00 ms"
        } else {
            ""
        };
        for message in [
            format!("START RequestId: r{i} Version: $LATEST"),
            format!("END RequestId: r{i}"),
            format!(
                "REPORT RequestId: r{i}\tDuration: 10.00 ms\tBilled Duration: 10 ms\tMemory Size: 2048 MB\tMax Memory Used: 90 MB{init}\t"
            ),
        ] {
            events.push(
                InputLogEvent::builder()
                    .timestamp(at(i * 2))
                    .message(message)
                    .build()
                    .unwrap(),
            );
        }
    }
    logs.put_log_events()
        .log_group_name(&group)
        .log_stream_name("2026/12/07/[$LATEST]abc")
        .set_log_events(Some(events))
        .send()
        .await
        .unwrap();

    let start = now - Duration::from_secs(600);
    let lines = lambda_logs::fetch(&logs, &group, start, now).await.unwrap();
    assert_eq!(lines.len(), 120, "every REPORT line, no other line");
    let s = lambda_logs::summarize(&lines);
    assert_eq!(s.cold_starts, 12);
    assert!((s.billed_gb_s - 120.0 * 0.010 * 2.0).abs() < 1e-9);
    // A window that holds only the first minute.
    let first = lambda_logs::fetch(&logs, &group, start, start + Duration::from_secs(59))
        .await
        .unwrap();
    assert_eq!(first.len(), 30);
    // A function without a log group is an error naming it.
    let err = lambda_logs::fetch(&logs, "/aws/lambda/none", start, now)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("/aws/lambda/none"), "{err:#}");

    let cw = lambda_metrics::client(Some(&moto.url), Some("eu-west-1")).await;
    let dim = Dimension::builder()
        .name("FunctionName")
        .value("fn-a")
        .build();
    let datum = |name: &str, value: f64, unit| {
        MetricDatum::builder()
            .metric_name(name)
            .dimensions(dim.clone())
            .timestamp((now - Duration::from_secs(120)).into())
            .value(value)
            .unit(unit)
            .build()
    };
    cw.put_metric_data()
        .namespace("AWS/Lambda")
        .metric_data(datum("Invocations", 7.0, StandardUnit::Count))
        .metric_data(datum("Invocations", 5.0, StandardUnit::Count))
        .metric_data(datum("Throttles", 2.0, StandardUnit::Count))
        .metric_data(datum("ConcurrentExecutions", 3.0, StandardUnit::Count))
        .send()
        .await
        .unwrap();
    let m = lambda_metrics::fetch(&cw, "fn-a", start, now)
        .await
        .unwrap();
    assert_eq!(m.invocations, Some(12.0));
    assert_eq!(m.throttles, Some(2.0));
    assert_eq!(m.concurrent_executions_max, Some(3.0));
    assert_eq!(m.errors, None);
    let other = lambda_metrics::fetch(&cw, "fn-b", start, now)
        .await
        .unwrap();
    assert!(other.is_empty(), "{other:?}");
}
