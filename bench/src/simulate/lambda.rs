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
}

impl Default for LambdaParams {
    fn default() -> Self {
        Self {
            concurrency: 1000,
            keep_alive_s: 300.0,
            burst: 1000.0,
            burst_window_s: 10.0,
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
    let mut done: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    // Idle environments' last use, oldest first.
    let mut idle: VecDeque<u64> = VecDeque::new();
    let mut busy: u64 = 0;
    let mut tokens_left = p.burst;
    let mut refilled_at = 0u64;
    let mut out = LambdaOut::default();
    let mut area = 0.0f64;
    let mut last = 0u64;
    let mut next_tick = 0u64;
    let bucket = tally.bucket_us;
    loop {
        let ta = arrivals.peek().map_or(u64::MAX, |a| a.0);
        let tc = done.peek().map_or(u64::MAX, |r| r.0);
        let tt = if next_tick <= duration_us {
            next_tick
        } else {
            u64::MAX
        };
        let t = ta.min(tc).min(tt);
        if t == u64::MAX {
            break;
        }
        area += busy as f64 * (t - last) as f64;
        last = t;
        if tc == t {
            done.pop();
            busy -= 1;
            idle.push_back(t);
            continue;
        }
        while idle.front().is_some_and(|&u| u + keep_alive <= t) {
            idle.pop_front();
        }
        if tt == t {
            tally.instances(t, busy + idle.len() as u64);
            next_tick += bucket;
            continue;
        }
        let (_, tok) = arrivals.next().expect("peeked");
        let tok = f64::from(tok);
        let overhead = inputs.lambda_overhead_ms.sample(rng);
        tokens_left = (tokens_left + (t - refilled_at) as f64 * refill_per_us).min(p.burst);
        refilled_at = t;
        let mut cold = false;
        let (latency_ms, error) = if idle.pop_back().is_some() {
            let d = inputs.lambda_duration.sample(tok, rng);
            done.push(Reverse(t + (d * 1000.0) as u64));
            busy += 1;
            out.invocations += 1;
            out.billed_ms += ceil_ms(d);
            (overhead + d, None)
        } else if busy + (idle.len() as u64) < p.concurrency && tokens_left >= 1.0 {
            tokens_left -= 1.0;
            let init = inputs.lambda_init_ms.sample(rng);
            let d = inputs.lambda_duration.sample(tok, rng);
            done.push(Reverse(t + ((init + d) * 1000.0) as u64));
            busy += 1;
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
            let live = busy + idle.len() as u64;
            out.peak_environments = out.peak_environments.max(live);
            tally.instances(t, live);
        }
    }
    out.billed_gb_s = out.billed_ms as f64 / 1000.0 * inputs.lambda_memory_mb / 1024.0;
    out.mean_in_system = if last > 0 { area / last as f64 } else { 0.0 };
    out
}
