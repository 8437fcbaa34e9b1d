//! The retry policy: which outcomes are retried, how long to wait between attempts
//! (exponential backoff with full jitter), when `Retry-After` is honoured, and the
//! per-attempt timeout under one total deadline.
//!
//! The delay before retry `n` (1 for the second attempt) is drawn uniformly from
//! `[0, min(max_backoff, base_backoff * 2^(n-1))]` ("full jitter", as in the AWS
//! Architecture Blog's *Exponential Backoff And Jitter*): many clients throttled at
//! once spread their retries over the whole window instead of coming back together.

use std::time::Duration;

use rand::Rng;

/// Why an attempt is retried (the `reason` label of the retry and failover metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// The TCP (or TLS) connection could not be made: the backend is down.
    Connect,
    /// No complete answer within the attempt's timeout.
    Timeout,
    /// The connection broke after it was made (reset, truncated answer).
    Transport,
    /// 429, or the Lambda front's `500` with `x-lambda-error-type: TooManyRequestsException`.
    Throttled,
    /// 502 from the backend or a gateway in front of it.
    BadGateway,
    /// 503: queue full, not ready, or API Gateway's integration timeout (a cold start).
    Unavailable,
    /// 504 from a gateway in front of the backend.
    GatewayTimeout,
    /// API Gateway's own `500 {"message":"Internal Server Error"}` with no word on why:
    /// on AWS that is how a throttled (or crashed) Lambda reaches the client.
    IntegrationFailure,
}

impl RetryReason {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Timeout => "timeout",
            RetryReason::Transport => "transport",
            RetryReason::Throttled => "throttled",
            RetryReason::BadGateway => "bad_gateway",
            RetryReason::Unavailable => "unavailable",
            RetryReason::GatewayTimeout => "gateway_timeout",
            RetryReason::IntegrationFailure => "integration_failure",
        }
    }

    /// Whether this reason says the backend is busy rather than broken.
    pub fn is_throttle(self) -> bool {
        matches!(
            self,
            RetryReason::Throttled | RetryReason::Unavailable | RetryReason::IntegrationFailure
        )
    }
}

/// The header the Lambda front (API Gateway, and the local emulator) sets on a failed
/// invocation; `TooManyRequestsException` on a `500` is a throttle.
pub const LAMBDA_ERROR_TYPE_HEADER: &str = "x-lambda-error-type";
/// Lambda's throttling error type.
pub const LAMBDA_THROTTLE: &str = "TooManyRequestsException";

/// API Gateway's body for a failed integration. Real API Gateway sends it with no
/// header saying why (a throttle and a crash look alike; the local front adds
/// `x-lambda-error-type`); the services never answer with it.
pub const API_GATEWAY_INTEGRATION_FAILURE: &[u8] = br#"{"message":"Internal Server Error"}"#;

/// Whether an HTTP answer is retried, and why. Only 429, 502, 503, 504, the Lambda
/// front's throttle (a 500 carrying `x-lambda-error-type: TooManyRequestsException`)
/// and, where no such header says otherwise, API Gateway's bare integration failure
/// (how a throttled Lambda answers through real API Gateway; resending a prediction
/// is safe, and a crash is retried at most `max_attempts` times) are; every other
/// status (2xx, other 4xx such as 422, other 5xx) is final.
pub fn classify_status(
    status: u16,
    lambda_error_type: Option<&str>,
    body: &[u8],
) -> Option<RetryReason> {
    match status {
        429 => Some(RetryReason::Throttled),
        500 if lambda_error_type.is_some_and(|t| t.trim() == LAMBDA_THROTTLE) => {
            Some(RetryReason::Throttled)
        }
        500 if lambda_error_type.is_none()
            && body.trim_ascii() == API_GATEWAY_INTEGRATION_FAILURE =>
        {
            Some(RetryReason::IntegrationFailure)
        }
        502 => Some(RetryReason::BadGateway),
        503 => Some(RetryReason::Unavailable),
        504 => Some(RetryReason::GatewayTimeout),
        _ => None,
    }
}

/// Parses `Retry-After` as delta-seconds (the form the services send). HTTP dates are
/// not used by any backend here and are ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// How requests are retried. All durations are wall-clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts per request, over all backends (at least 1).
    pub max_attempts: u32,
    /// Total time for a request, attempts and waits together.
    pub deadline: Duration,
    /// The backoff ceiling of the first retry.
    pub base_backoff: Duration,
    /// The largest backoff ceiling.
    pub max_backoff: Duration,
    /// Longest one attempt may take (connect, send, whole answer); always clipped to
    /// the time left before the deadline.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            deadline: Duration::from_millis(10_000),
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(2_000),
            attempt_timeout: Duration::from_millis(4_000),
        }
    }
}

impl RetryPolicy {
    /// The upper end of the jitter window before retry `retry` (1 = the second attempt):
    /// `min(max_backoff, base_backoff * 2^(retry-1))`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let ceiling = self
            .base_backoff
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max_backoff);
        ceiling.min(self.max_backoff)
    }

    /// A full-jitter delay before retry `retry`: uniform in `[0, backoff_ceiling(retry)]`.
    pub fn backoff<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let ceiling = self.backoff_ceiling(retry).as_micros() as u64;
        Duration::from_micros(rng.random_range(0..=ceiling))
    }

    /// The wait before retry `retry` on the same backend, or `None` when no retry can
    /// finish in time. `Retry-After` is honoured when the wait plus a useful attempt
    /// fits in `remaining`; when it does not, the router does not sleep past the
    /// deadline on the server's word, and falls back to the jittered backoff. A delay
    /// that would use up all the remaining time gives `None`.
    pub fn delay<R: Rng + ?Sized>(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        remaining: Duration,
        rng: &mut R,
    ) -> Option<Duration> {
        let delay = match retry_after {
            Some(wait) if wait < remaining => wait,
            _ => self.backoff(retry, rng),
        };
        (delay < remaining).then_some(delay)
    }

    /// The timeout of an attempt started with `remaining` time left.
    pub fn attempt_timeout_within(&self, remaining: Duration) -> Duration {
        self.attempt_timeout.min(remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            deadline: Duration::from_secs(10),
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(2_000),
            attempt_timeout: Duration::from_secs(4),
        }
    }

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let p = policy();
        let ms = |r| p.backoff_ceiling(r).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5), ms(6), ms(7)],
            [50, 100, 200, 400, 800, 1600, 2000]
        );
        assert_eq!(p.backoff_ceiling(40), Duration::from_millis(2_000));
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_millis(2_000));
    }

    #[test]
    fn backoff_stays_in_the_full_jitter_envelope_and_spreads_over_it() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(17);
        for retry in 1..=8 {
            let ceiling = p.backoff_ceiling(retry);
            let draws: Vec<Duration> = (0..2_000).map(|_| p.backoff(retry, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Full jitter, not "equal jitter": the lower half of the window is used too.
            let low = draws.iter().filter(|d| **d < ceiling / 4).count();
            let high = draws.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!(
                low > 300 && high > 300,
                "retry {retry}: {low} low, {high} high"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let p = policy();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=6).map(|r| p.backoff(r, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn retry_after_is_honoured_only_when_it_fits() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        let second = Some(Duration::from_secs(1));
        assert_eq!(
            p.delay(1, second, Duration::from_secs(5), &mut rng),
            Some(Duration::from_secs(1))
        );
        // Too long for the time left: the jittered backoff instead.
        let d = p.delay(
            1,
            Some(Duration::from_secs(30)),
            Duration::from_secs(5),
            &mut rng,
        );
        assert!(d.is_some_and(|d| d <= Duration::from_millis(50)), "{d:?}");
        // No time for anything.
        assert_eq!(p.delay(1, second, Duration::ZERO, &mut rng), None);
    }

    #[test]
    fn only_throttles_and_gateway_failures_are_retried() {
        let gw = API_GATEWAY_INTEGRATION_FAILURE;
        for s in [200, 400, 404, 413, 415, 422, 500, 501] {
            assert_eq!(classify_status(s, None, b"{}"), None, "{s}");
        }
        for (s, reason) in [
            (429, RetryReason::Throttled),
            (502, RetryReason::BadGateway),
            (503, RetryReason::Unavailable),
            (504, RetryReason::GatewayTimeout),
        ] {
            assert_eq!(classify_status(s, None, b""), Some(reason), "{s}");
        }
        assert_eq!(
            classify_status(500, Some("TooManyRequestsException"), gw),
            Some(RetryReason::Throttled)
        );
        assert_eq!(classify_status(500, Some("Runtime.ExitError"), gw), None);
        assert_eq!(
            classify_status(422, Some("TooManyRequestsException"), b""),
            None
        );
        // Real API Gateway: the bare integration failure, no header.
        assert_eq!(
            classify_status(500, None, b"{\"message\":\"Internal Server Error\"}\n"),
            Some(RetryReason::IntegrationFailure)
        );
        // A service's own 500 is its answer.
        assert_eq!(
            classify_status(500, None, br#"{"error":"internal","detail":"x"}"#),
            None
        );
    }

    #[test]
    fn retry_after_parses_seconds() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn attempts_never_outlast_the_deadline() {
        let p = policy();
        assert_eq!(
            p.attempt_timeout_within(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(
            p.attempt_timeout_within(Duration::from_secs(60)),
            Duration::from_secs(4)
        );
    }
}
