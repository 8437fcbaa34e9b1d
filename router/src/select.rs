//! Which backend an attempt goes to: a fixed one, or `auto` (healthy first, then the
//! lower latency average; or a weighted random split for experiments), and where a
//! failed attempt fails over to.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::backend::{Backend, Snapshot};

/// `?backend=` and `--default-backend`: one backend, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Choice {
    Auto,
    Fixed(Backend),
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Auto => f.write_str("auto"),
            Choice::Fixed(b) => b.fmt(f),
        }
    }
}

/// A name that is not `lambda`, `k8s` or `auto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}: expected lambda, k8s or auto")]
pub struct UnknownChoice(pub String);

impl FromStr for Choice {
    type Err = UnknownChoice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Choice::Auto);
        }
        s.parse()
            .map(Choice::Fixed)
            .map_err(|_| UnknownChoice(s.to_string()))
    }
}

/// `--weights lambda=1,k8s=3`: under `auto`, the share of requests each backend gets
/// first (a backend that is down still fails over to the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub lambda: u32,
    pub k8s: u32,
}

impl Weights {
    pub fn of(&self, backend: Backend) -> u32 {
        match backend {
            Backend::Lambda => self.lambda,
            Backend::K8s => self.k8s,
        }
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lambda={},k8s={}", self.lambda, self.k8s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad weights {0:?}: expected e.g. lambda=1,k8s=3 (non-negative integers, not both 0)")]
pub struct BadWeights(pub String);

impl FromStr for Weights {
    type Err = BadWeights;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadWeights(s.to_string());
        let mut weights = Weights { lambda: 0, k8s: 0 };
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(bad)?;
            let backend: Backend = name.parse().map_err(|_| bad())?;
            let value: u32 = value.trim().parse().map_err(|_| bad())?;
            match backend {
                Backend::Lambda => weights.lambda = value,
                Backend::K8s => weights.k8s = value,
            }
        }
        if weights.lambda == 0 && weights.k8s == 0 {
            return Err(bad());
        }
        Ok(weights)
    }
}

/// The first backend of an `auto` request. Healthy before unhealthy; with weights, a
/// weighted draw among the healthy ones; otherwise the lower latency average, where a
/// backend without a (fresh) average goes first so it gets measured; ties go to Lambda.
pub fn pick<R: Rng + ?Sized>(
    lambda: &Snapshot,
    k8s: &Snapshot,
    weights: Option<&Weights>,
    rng: &mut R,
) -> Backend {
    match (lambda.healthy, k8s.healthy) {
        (true, false) => return Backend::Lambda,
        (false, true) => return Backend::K8s,
        _ => {}
    }
    if let Some(w) = weights {
        let total = u64::from(w.lambda) + u64::from(w.k8s);
        return if rng.random_range(0..total) < u64::from(w.lambda) {
            Backend::Lambda
        } else {
            Backend::K8s
        };
    }
    match (lambda.ewma, k8s.ewma) {
        (None, _) => Backend::Lambda,
        (Some(_), None) => Backend::K8s,
        (Some(l), Some(k)) if k < l => Backend::K8s,
        _ => Backend::Lambda,
    }
}

/// Where an `auto` request goes after an attempt on `failed` failed: the other backend,
/// unless the other is down while `failed` still counts as healthy (one timeout does
/// not outweigh a backend known to be down).
pub fn failover(failed: &Snapshot, other: &Snapshot) -> Backend {
    if other.healthy || !failed.healthy {
        other.backend
    } else {
        failed.backend
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Probe;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::time::Duration;

    fn snap(backend: Backend, healthy: bool, ewma_ms: Option<u64>) -> Snapshot {
        Snapshot {
            backend,
            healthy,
            ewma: ewma_ms.map(Duration::from_millis),
            consecutive_failures: 0,
            probe: Probe::Unknown,
            throttled: false,
        }
    }

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(Choice::Auto));
        assert_eq!("LAMBDA".parse(), Ok(Choice::Fixed(Backend::Lambda)));
        assert_eq!("k8s".parse(), Ok(Choice::Fixed(Backend::K8s)));
        assert!("both".parse::<Choice>().is_err());
    }

    #[test]
    fn weights_parse() {
        assert_eq!("lambda=1,k8s=3".parse(), Ok(Weights { lambda: 1, k8s: 3 }));
        assert_eq!("k8s=2".parse(), Ok(Weights { lambda: 0, k8s: 2 }));
        for bad in ["", "lambda=0,k8s=0", "lambda", "gpu=1", "lambda=-1"] {
            assert!(bad.parse::<Weights>().is_err(), "{bad}");
        }
    }

    #[test]
    fn healthy_first_then_lower_latency() {
        let mut rng = StdRng::seed_from_u64(0);
        let pick = |l, k, rng: &mut StdRng| pick(&l, &k, None, rng);
        let (l, k) = (Backend::Lambda, Backend::K8s);
        assert_eq!(
            pick(snap(l, false, Some(1)), snap(k, true, Some(900)), &mut rng),
            k
        );
        assert_eq!(
            pick(snap(l, true, Some(900)), snap(k, false, Some(1)), &mut rng),
            l
        );
        assert_eq!(
            pick(snap(l, true, Some(90)), snap(k, true, Some(10)), &mut rng),
            k
        );
        assert_eq!(
            pick(snap(l, true, Some(10)), snap(k, true, Some(90)), &mut rng),
            l
        );
        // Unmeasured goes first, so both get measured.
        assert_eq!(
            pick(snap(l, true, Some(10)), snap(k, true, None), &mut rng),
            k
        );
        assert_eq!(pick(snap(l, true, None), snap(k, true, None), &mut rng), l);
    }

    #[test]
    fn weights_split_the_healthy_traffic() {
        let mut rng = StdRng::seed_from_u64(42);
        let w = Weights { lambda: 1, k8s: 3 };
        let l = snap(Backend::Lambda, true, None);
        let k = snap(Backend::K8s, true, None);
        let lambdas = (0..4_000)
            .filter(|_| pick(&l, &k, Some(&w), &mut rng) == Backend::Lambda)
            .count();
        assert!((800..1_200).contains(&lambdas), "{lambdas} of 4000");
        // A down backend gets nothing whatever its weight.
        let down = snap(Backend::K8s, false, None);
        assert!((0..100).all(|_| pick(&l, &down, Some(&w), &mut rng) == Backend::Lambda));
    }

    #[test]
    fn failover_goes_to_the_other_unless_it_is_down() {
        let l = snap(Backend::Lambda, true, None);
        let k = snap(Backend::K8s, true, None);
        assert_eq!(failover(&l, &k), Backend::K8s);
        let k_down = snap(Backend::K8s, false, None);
        assert_eq!(failover(&l, &k_down), Backend::Lambda);
        let l_down = snap(Backend::Lambda, false, None);
        assert_eq!(failover(&l_down, &k_down), Backend::K8s);
    }
}
