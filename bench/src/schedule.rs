//! Send schedules, computed up front: the offset from the start of the run at which
//! request `i` leaves, whatever happened to the requests before it (open loop).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

/// The load profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// `rate` requests per second for the whole duration.
    Constant,
    /// The rate rises in `steps` equal steps, `rate/steps` up to `rate`, each lasting
    /// `duration/steps`.
    Step,
    /// The rate rises linearly from 0 to `rate` over the duration.
    Ramp,
    /// Idle, then a burst at `rate` for the last `burst` of the duration: the profile
    /// that shows cold starts.
    Spike,
    /// Send times read from a file (`--trace`).
    Trace,
}

/// One planned request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// Offset from the start of the run.
    pub at: Duration,
    /// A text length in words from a trace file, if it gave one.
    pub words: Option<usize>,
}

/// What a schedule is computed from.
#[derive(Debug, Clone)]
pub struct Spec {
    pub profile: Profile,
    /// Requests per second (the peak rate for step, ramp and spike).
    pub rate: f64,
    pub duration: Duration,
    /// At most this many requests.
    pub max_requests: Option<usize>,
    /// Number of steps of the step profile.
    pub steps: u32,
    /// Length of the spike profile's burst (clipped to the duration).
    pub burst: Duration,
}

impl Spec {
    /// `rate` requests per second for `duration`, no cap.
    pub fn constant(rate: f64, duration: Duration) -> Self {
        Self {
            profile: Profile::Constant,
            rate,
            duration,
            max_requests: None,
            steps: 1,
            burst: Duration::ZERO,
        }
    }
}

/// The schedule of `spec`, in time order; for [`Profile::Trace`] use [`from_trace`].
pub fn generate(spec: &Spec) -> anyhow::Result<Vec<Planned>> {
    if !(spec.rate.is_finite() && spec.rate > 0.0) {
        bail!("--rate must be above 0");
    }
    let d = spec.duration.as_secs_f64();
    let r = spec.rate;
    let cap = spec.max_requests.unwrap_or(usize::MAX);
    let mut times: Vec<f64> = Vec::new();
    let push_uniform = |from: f64, to: f64, rate: f64, times: &mut Vec<f64>| {
        let n = ((to - from) * rate).round() as usize;
        for i in 0..n {
            if times.len() >= cap {
                return;
            }
            times.push(from + i as f64 / rate);
        }
    };
    match spec.profile {
        Profile::Constant => push_uniform(0.0, d, r, &mut times),
        Profile::Step => {
            let steps = spec.steps.max(1);
            let len = d / f64::from(steps);
            for k in 0..steps {
                let rate = r * f64::from(k + 1) / f64::from(steps);
                push_uniform(len * f64::from(k), len * f64::from(k + 1), rate, &mut times);
            }
        }
        Profile::Ramp => {
            // Rate r(t) = r·t/d, so N(t) = r·t²/(2d): request i leaves at sqrt(2·d·i/r).
            let n = (r * d / 2.0).round() as usize;
            for i in 0..n.min(cap) {
                times.push((2.0 * d * i as f64 / r).sqrt());
            }
        }
        Profile::Spike => {
            let burst = spec.burst.as_secs_f64().min(d);
            push_uniform(d - burst, d, r, &mut times);
        }
        Profile::Trace => bail!("the trace profile needs --trace FILE"),
    }
    Ok(times
        .into_iter()
        .map(|t| Planned {
            at: Duration::from_secs_f64(t),
            words: None,
        })
        .collect())
}

/// A trace: one send time per line in seconds (float) from the start, optionally
/// followed by a text length in words; blank lines and `#` comments are skipped. The
/// times are sorted; those past `duration` or beyond `max_requests` are dropped.
pub fn parse_trace(
    text: &str,
    duration: Option<Duration>,
    max_requests: Option<usize>,
) -> anyhow::Result<Vec<Planned>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split(|c: char| c.is_whitespace() || c == ',');
        let mut fields = fields.by_ref().filter(|f| !f.is_empty());
        let at: f64 = fields
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("trace line {}: not a time in seconds", n + 1))?;
        if !(at.is_finite() && at >= 0.0) {
            bail!("trace line {}: time {at} is negative", n + 1);
        }
        let words = match fields.next() {
            Some(w) => Some(
                w.parse()
                    .with_context(|| format!("trace line {}: not a text length", n + 1))?,
            ),
            None => None,
        };
        out.push(Planned {
            at: Duration::from_secs_f64(at),
            words,
        });
    }
    out.sort_by_key(|p| p.at);
    if let Some(d) = duration {
        out.retain(|p| p.at <= d);
    }
    if let Some(n) = max_requests {
        out.truncate(n);
    }
    Ok(out)
}

/// [`parse_trace`] of a file.
pub fn from_trace(
    path: &Path,
    duration: Option<Duration>,
    max_requests: Option<usize>,
) -> anyhow::Result<Vec<Planned>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading trace {}", path.display()))?;
    parse_trace(&text, duration, max_requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(profile: Profile, rate: f64, secs: u64) -> Spec {
        Spec {
            profile,
            rate,
            duration: Duration::from_secs(secs),
            max_requests: None,
            steps: 4,
            burst: Duration::from_secs(2),
        }
    }

    fn secs(s: &[Planned]) -> Vec<f64> {
        s.iter().map(|p| p.at.as_secs_f64()).collect()
    }

    /// The send times (s) `profile` plans at `rate` over `duration_s`, checked to be in
    /// order: every profile must plan its requests in time order.
    fn planned_secs(profile: Profile, rate: f64, duration_s: u64) -> Vec<f64> {
        let t = secs(&generate(&spec(profile, rate, duration_s)).unwrap());
        assert!(
            t.windows(2).all(|w| w[0] <= w[1]),
            "{profile:?} out of order"
        );
        t
    }

    /// Requests planned in [from, to).
    fn count_in(t: &[f64], from: f64, to: f64) -> usize {
        t.iter().filter(|&&x| x >= from && x < to).count()
    }

    #[test]
    fn constant_is_evenly_spaced_at_the_rate() {
        let t = planned_secs(Profile::Constant, 100.0, 10);
        assert_eq!(t.len(), 1000);
        assert_eq!(t[0], 0.0);
        for w in t.windows(2) {
            assert!((w[1] - w[0] - 0.01).abs() < 1e-9);
        }
        assert!(*t.last().unwrap() < 10.0);
    }

    #[test]
    fn request_cap_bounds_every_profile() {
        for p in [
            Profile::Constant,
            Profile::Step,
            Profile::Ramp,
            Profile::Spike,
        ] {
            let mut s = spec(p, 100.0, 10);
            s.max_requests = Some(7);
            assert_eq!(generate(&s).unwrap().len(), 7, "{p:?}");
        }
    }

    #[test]
    fn step_rises_in_steps() {
        let t = planned_secs(Profile::Step, 100.0, 8);
        // 4 steps of 2 s at 25, 50, 75, 100 req/s.
        assert_eq!(count_in(&t, 0.0, 2.0), 50);
        assert_eq!(count_in(&t, 2.0, 4.0), 100);
        assert_eq!(count_in(&t, 4.0, 6.0), 150);
        assert_eq!(count_in(&t, 6.0, 8.0), 200);
        assert_eq!(t.len(), 500);
    }

    #[test]
    fn ramp_rises_linearly() {
        let t = planned_secs(Profile::Ramp, 200.0, 10);
        assert_eq!(t.len(), 1000); // the area of the triangle: 200 · 10 / 2
        // Rate around t is 20·t req/s: count in a 1 s window centred on 2.5 s and 7.5 s.
        let early = count_in(&t, 2.0, 3.0) as f64;
        let late = count_in(&t, 7.0, 8.0) as f64;
        assert!((early - 50.0).abs() <= 2.0, "{early}");
        assert!((late - 150.0).abs() <= 2.0, "{late}");
        assert!(*t.last().unwrap() < 10.0);
    }

    #[test]
    fn spike_is_idle_then_a_burst_at_the_rate() {
        let t = planned_secs(Profile::Spike, 50.0, 10);
        assert_eq!(count_in(&t, 0.0, 8.0), 0);
        assert_eq!(count_in(&t, 8.0, 10.0), 100);
    }

    #[test]
    fn a_zero_rate_is_refused() {
        assert!(generate(&spec(Profile::Constant, 0.0, 1)).is_err());
        assert!(generate(&spec(Profile::Trace, 1.0, 1)).is_err());
    }

    #[test]
    fn traces_parse_sort_and_bound() {
        let text = "# t words\n0.5 12\n0.0\n\n1.25, 3\n9.0\n";
        let t = parse_trace(text, Some(Duration::from_secs(2)), None).unwrap();
        assert_eq!(secs(&t), vec![0.0, 0.5, 1.25]);
        assert_eq!(t[0].words, None);
        assert_eq!(t[1].words, Some(12));
        assert_eq!(t[2].words, Some(3));
        assert_eq!(parse_trace(text, None, Some(2)).unwrap().len(), 2);
        assert!(parse_trace("soon\n", None, None).is_err());
        assert!(parse_trace("-1\n", None, None).is_err());
    }
}
