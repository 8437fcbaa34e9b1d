//! `sentiment-router`: one endpoint in front of the two deployments of the sentiment
//! API, the Lambda behind its API Gateway front and the Kubernetes Service.
//!
//! - [`retry`]: which outcomes are retried, exponential backoff with full jitter,
//!   `Retry-After`, the per-attempt timeout and the total deadline;
//! - [`backend`]: per-backend state (latency EWMA, passive health, `/healthz` probe);
//! - [`select`]: `auto` selection, weighted split, failover;
//! - [`client`]: [`Router`], whose [`Router::predict`] forwards one request (the
//!   benchmark calls it directly, without the HTTP server);
//! - [`server`]: the hyper front with `/predict`, `/healthz`, `/readyz`, `/metrics`;
//! - [`config`]: [`Config`] and the binary's flags.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sentiment_router::{Choice, Config, Router};
//! let router = Router::new(Config::new("http://127.0.0.1:9001", "http://127.0.0.1:9002"))?;
//! let answer = router
//!     .predict(Choice::Auto, r#"{"text":"great"}"#.into(), Some("application/json"))
//!     .await?;
//! println!("{} from {} after {} attempts", answer.status, answer.backend, answer.attempts);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod client;
pub mod config;
pub mod metrics;
pub mod retry;
pub mod select;
pub mod server;

pub use backend::{Backend, HealthPolicy, Probe, Snapshot};
pub use client::{ATTEMPTS_HEADER, Answer, BACKEND_HEADER, BuildError, Probes, RouteError, Router};
pub use config::{Args, Config};
pub use retry::{RetryPolicy, RetryReason};
pub use select::{Choice, Weights};
