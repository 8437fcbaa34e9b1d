//! The Lambda side: one request per execution environment; a request that finds no
//! idle environment starts one (a cold start: the init, then the invocation), if the
//! concurrency limit and the burst scaling rate allow, else it is throttled (429).
//! Idle environments are reused most recently used first (as `lambda-emulator` does)
//! and reaped after the keep-alive. Billing: each invocation's init + duration,
//! rounded up to 1 ms.
//!
//! The scaling rate: since November 2023 "each synchronously invoked function can
//! scale by 1,000 concurrent executions every 10 seconds", up to the account's
//! concurrency limit (1,000 by default)
//! (<https://docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html>). Modelled
//! as a token bucket: 1,000 new environments at once, refilled at 100 per second; a
//! request that needs a new environment with the bucket empty is throttled.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::inputs::Inputs;
use super::tally::Tally;

#[derive(Debug, Clone, Serialize)]
pub struct LambdaParams {
    /// The account's (or the function's reserved) concurrency: live environments,
    /// initializing ones included.
    pub concurrency: u64,
    /// How long an idle environment lives (AWS does not document it; observed minutes;
    /// `lambda-emulator` and the local stack use 300 s).
    pub keep_alive_s: f64,
    /// New environments per `burst_window_s` (AWS: 1,000 per 10 s).
    pub burst: f64,
    pub burst_window_s: f64,
    /// Environments already initialized and idle when the run starts (a live run that
    /// followed another one on the same function).
    pub warm_at_start: u64,
}

impl Default for LambdaParams {
    fn default() -> Self {
        Self {
            concurrency: 1000,
            keep_alive_s: 300.0,
            burst: 1000.0,
            burst_window_s: 10.0,
            warm_at_start: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LambdaOut {
    pub invocations: u64,
    /// Σ per-invocation ceil(init + duration), ms.
    pub billed_ms: u64,
    pub billed_gb_s: f64,
    pub peak_environments: u64,
    /// Time-average of requests in the system (Little's law's L).
    pub mean_in_system: f64,
}

/// `x.ceil() as u64` without libm's `ceil` (a call without SSE4.1, ~3 % of the run):
/// the same for every f64 (negative and NaN: 0).
#[inline]
fn ceil_ms(x: f64) -> u64 {
    let t = x as u64;
    t.saturating_add(u64::from((t as f64) < x))
}

/// Moves the busy environments' ends due by `t` to the idle list, oldest first.
fn settle(done: &mut BinaryHeap<Reverse<u64>>, idle: &mut VecDeque<u64>, t: u64) {
    while done.peek().is_some_and(|r| r.0 <= t) {
        let Reverse(end) = done.pop().expect("peeked");
        idle.push_back(end);
    }
}

/// Drops the idle environments unused for the keep-alive.
fn reap(idle: &mut VecDeque<u64>, t: u64, keep_alive: u64) {
    while idle.front().is_some_and(|&u| u + keep_alive <= t) {
        idle.pop_front();
    }
}

/// `arrivals`: each arrival's time (µs) and its text's tokens; `rng`: the service
/// times' stream.
pub fn run(
    arrivals: impl Iterator<Item = super::Arrival>,
    inputs: &Inputs,
    p: &LambdaParams,
    duration_us: u64,
    rng: &mut ChaCha8Rng,
    tally: &mut Tally,
) -> LambdaOut {
    let keep_alive = (p.keep_alive_s * 1e6) as u64;
    let refill_per_us = p.burst / (p.burst_window_s * 1e6);
    let mut arrivals = arrivals.peekable();
    // Busy environments' end times. An end is not an event of its own: the next
    // arrival or tick settles the ends due by its time. An arrival that finds one
    // due rewrites the earliest in place (one sift of the heap, not a pop and a push)
    // and the environment it reuses is still the one idle since the latest end, as
    // the emulator picks (most recently used first): only the idle times are kept.
    let mut done: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    // Idle environments' last use, oldest first.
    let mut idle: VecDeque<u64> = std::iter::repeat_n(0, p.warm_at_start as usize).collect();
    let mut tokens_left = p.burst;
    let mut refilled_at = 0u64;
    let mut out = LambdaOut {
        peak_environments: p.warm_at_start,
        ..LambdaOut::default()
    };
    // Σ invocation µs = ∫ busy dt over the run, in an integer.
    let mut busy_us = 0u128;
    let mut last = 0u64;
    let mut next_tick = 0u64;
    let bucket = tally.bucket_us;
    loop {
        let ta = arrivals.peek().map_or(u64::MAX, |a| a.0);
        let tt = if next_tick <= duration_us {
            next_tick
        } else {
            u64::MAX
        };
        let t = ta.min(tt);
        if t == u64::MAX {
            break;
        }
        last = t;
        if tt == t {
            settle(&mut done, &mut idle, t);
            reap(&mut idle, t, keep_alive);
            tally.instances(t, (done.len() + idle.len()) as u64);
            next_tick += bucket;
            continue;
        }
        // Idle ends are older than the busy ones: the earliest busy end, if due and
        // not past the keep-alive, means an environment to reuse.
        let due_end_warm = done
            .peek()
            .is_some_and(|r| r.0 <= t && r.0 + keep_alive > t);
        if !due_end_warm {
            settle(&mut done, &mut idle, t);
        }
        reap(&mut idle, t, keep_alive);
        let (_, tok) = arrivals.next().expect("peeked");
        let tok = f64::from(tok);
        let overhead = inputs.lambda_overhead_ms.sample(rng);
        tokens_left = (tokens_left + (t - refilled_at) as f64 * refill_per_us).min(p.burst);
        refilled_at = t;
        let mut cold = false;
        let (latency_ms, error) = if due_end_warm || !idle.is_empty() {
            let d = inputs.lambda_duration.sample(tok, rng);
            let us = (d * 1000.0) as u64;
            if due_end_warm {
                let mut top = done.peek_mut().expect("peeked");
                let mut reused = top.0;
                *top = Reverse(t + us);
                drop(top);
                // The other ends due go idle, all but the latest, whose environment
                // this request took.
                while done.peek().is_some_and(|r| r.0 <= t) {
                    let Reverse(end) = done.pop().expect("peeked");
                    idle.push_back(reused);
                    reused = end;
                }
            } else {
                idle.pop_back();
                done.push(Reverse(t + us));
            }
            busy_us += u128::from(us);
            out.invocations += 1;
            out.billed_ms += ceil_ms(d);
            (overhead + d, None)
        } else if ((done.len() + idle.len()) as u64) < p.concurrency && tokens_left >= 1.0 {
            tokens_left -= 1.0;
            let init = inputs.lambda_init_ms.sample(rng);
            let d = inputs.lambda_duration.sample(tok, rng);
            let us = ((init + d) * 1000.0) as u64;
            done.push(Reverse(t + us));
            busy_us += u128::from(us);
            out.invocations += 1;
            out.billed_ms += ceil_ms(init + d);
            tally.cold += 1;
            cold = true;
            (overhead + init + d, None)
        } else {
            (overhead, Some("429"))
        };
        tally.record(t, (latency_ms * 1000.0) as u64, error);
        if cold {
            // The count only grows at a cold start (ticks sample it otherwise).
            let live = (done.len() + idle.len()) as u64;
            out.peak_environments = out.peak_environments.max(live);
            tally.instances(t, live);
        }
    }
    // The run ends with the last invocation.
    last = last.max(done.iter().map(|r| r.0).max().unwrap_or(0));
    out.billed_gb_s = out.billed_ms as f64 / 1000.0 * inputs.lambda_memory_mb / 1024.0;
    out.mean_in_system = if last > 0 {
        busy_us as f64 / last as f64
    } else {
        0.0
    };
    out
}
