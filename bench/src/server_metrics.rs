//! The server's Prometheus `/metrics`, read the way a scraper does: request counts by
//! status, the request latency histogram, batch sizes, queue depth, readiness.
//!
//! Only the text exposition format's sample lines are needed (`name{labels} value`);
//! `# HELP`/`# TYPE` lines and timestamps are skipped.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start().strip_prefix('"')?;
        // The value runs to the first quote not escaped by a backslash.
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        rest = after[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(labels)
}

/// The sample lines of an exposition; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let close = line.rfind('}')?;
                    (
                        &line[..open],
                        parse_labels(&line[open + 1..close])?,
                        &line[close + 1..],
                    )
                }
                None => {
                    let (name, rest) = line.split_once(' ')?;
                    (name, BTreeMap::new(), rest)
                }
            };
            let value = rest.split_whitespace().next()?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some(Sample {
                name: name.trim().to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// What one scrape of a server says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerSummary {
    /// `POST /predict` answers by status.
    pub predict_by_status: BTreeMap<String, f64>,
    pub predict_requests: f64,
    /// From the request duration histogram's buckets (the upper bound of the bucket
    /// the quantile falls in), seconds → ms.
    pub predict_p50_ms: Option<f64>,
    pub predict_p99_ms: Option<f64>,
    pub predict_mean_ms: Option<f64>,
    pub batch_size_mean: Option<f64>,
    pub forward_passes: f64,
    pub queue_depth: Option<f64>,
    pub dropped: f64,
    pub ready: Option<f64>,
    pub model_load_s: Option<f64>,
}

fn is_predict(s: &Sample) -> bool {
    s.labels.get("route").is_none_or(|r| r == "/predict")
}

/// The `q` quantile of a cumulative histogram: the upper bound of the first bucket
/// holding it.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let mut sorted = buckets.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = sorted.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    sorted
        .iter()
        .find(|(_, count)| *count >= rank)
        .map(|(le, _)| *le)
}

pub fn summarize(samples: &[Sample]) -> ServerSummary {
    let sum_of = |name: &str, predict_only: bool| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name && (!predict_only || is_predict(s)))
            .map(|s| s.value)
            .sum::<f64>()
            // An empty f64 sum is -0.0.
            + 0.0
    };
    let one = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
    let mut s = ServerSummary::default();
    for sample in samples.iter().filter(|s| {
        s.name == "sentiment_http_requests_total"
            && is_predict(s)
            && s.labels.contains_key("status")
    }) {
        *s.predict_by_status
            .entry(sample.labels["status"].clone())
            .or_default() += sample.value;
    }
    s.predict_requests = s.predict_by_status.values().sum();
    let mut buckets: BTreeMap<String, f64> = BTreeMap::new();
    for b in samples
        .iter()
        .filter(|x| x.name == "sentiment_http_request_duration_seconds_bucket" && is_predict(x))
    {
        if let Some(le) = b.labels.get("le") {
            *buckets.entry(le.clone()).or_default() += b.value;
        }
    }
    let buckets: Vec<(f64, f64)> = buckets
        .into_iter()
        .filter_map(|(le, n)| {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n))
        })
        .collect();
    let ms = |v: Option<f64>| v.map(|x| x * 1000.0);
    s.predict_p50_ms = ms(bucket_quantile(&buckets, 0.5));
    s.predict_p99_ms = ms(bucket_quantile(&buckets, 0.99));
    let (sum, count) = (
        sum_of("sentiment_http_request_duration_seconds_sum", true),
        sum_of("sentiment_http_request_duration_seconds_count", true),
    );
    s.predict_mean_ms = (count > 0.0).then(|| sum / count * 1000.0);
    let (bsum, bcount) = (
        sum_of("sentiment_batch_size_sum", false),
        sum_of("sentiment_batch_size_count", false),
    );
    s.forward_passes = bcount;
    s.batch_size_mean = (bcount > 0.0).then(|| bsum / bcount);
    s.queue_depth = one("sentiment_queue_depth");
    s.dropped = sum_of("sentiment_dropped_requests_total", false);
    s.ready = one("sentiment_ready");
    s.model_load_s = one("sentiment_model_load_seconds");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP sentiment_http_requests HTTP requests answered.
# TYPE sentiment_http_requests counter
sentiment_http_requests_total{route="/predict",method="POST",status="200"} 90
sentiment_http_requests_total{route="/predict",method="POST",status="422"} 10
sentiment_http_requests_total{route="/healthz",method="GET",status="200"} 7
sentiment_http_request_duration_seconds_bucket{le="0.005",route="/predict"} 10
sentiment_http_request_duration_seconds_bucket{le="0.01",route="/predict"} 60
sentiment_http_request_duration_seconds_bucket{le="0.1",route="/predict"} 99
sentiment_http_request_duration_seconds_bucket{le="+Inf",route="/predict"} 100
sentiment_http_request_duration_seconds_sum{route="/predict"} 1.5
sentiment_http_request_duration_seconds_count{route="/predict"} 100
sentiment_batch_size_sum 120
sentiment_batch_size_count 40
sentiment_queue_depth 3
sentiment_dropped_requests_total{reason="deadline"} 2
sentiment_ready 1
sentiment_model_load_seconds 0.25
weird_line_without_value
label_escapes{path="a\"b,c"} 4
"#;

    #[test]
    fn the_exposition_parses() {
        let samples = parse(SCRAPE);
        let escaped = samples.iter().find(|s| s.name == "label_escapes").unwrap();
        assert_eq!(escaped.labels["path"], "a\"b,c");
        assert!(samples.iter().all(|s| s.name != "weird_line_without_value"));
        let inf = samples
            .iter()
            .find(|s| s.labels.get("le").map(String::as_str) == Some("+Inf"))
            .unwrap();
        assert_eq!(inf.value, 100.0);
    }

    #[test]
    fn the_summary_reads_the_server_families() {
        let s = summarize(&parse(SCRAPE));
        assert_eq!(s.predict_requests, 100.0);
        assert_eq!(s.predict_by_status["422"], 10.0);
        assert_eq!(s.predict_p50_ms, Some(10.0));
        assert_eq!(s.predict_p99_ms, Some(100.0));
        assert_eq!(s.predict_mean_ms, Some(15.0));
        assert_eq!(s.batch_size_mean, Some(3.0));
        assert_eq!(s.queue_depth, Some(3.0));
        assert_eq!(s.dropped, 2.0);
        assert_eq!(s.ready, Some(1.0));
    }

    #[test]
    fn quantiles_come_from_the_bucket_holding_them() {
        let b = [(1.0, 5.0), (2.0, 9.0), (f64::INFINITY, 10.0)];
        assert_eq!(bucket_quantile(&b, 0.5), Some(1.0));
        assert_eq!(bucket_quantile(&b, 0.6), Some(2.0));
        assert_eq!(bucket_quantile(&b, 1.0), Some(f64::INFINITY));
        assert_eq!(bucket_quantile(&[], 0.5), None);
    }
}
