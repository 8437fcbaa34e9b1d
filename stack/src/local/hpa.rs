//! The HorizontalPodAutoscaler's algorithm (autoscaling/v2, resource metric CPU,
//! `Utilization` target), as kube-controller-manager runs it, for the local control
//! plane: given the pods' CPU use against their requests, how many replicas the
//! Deployment should have.
//!
//! From the Kubernetes documentation ("Horizontal Pod Autoscaling", algorithm details)
//! and `pkg/controller/podautoscaler`:
//! - `desired = ceil(current × currentUtilization / targetUtilization)`, where the
//!   utilization is the mean over ready pods of usage / request;
//! - no change while `|ratio − 1| ≤ tolerance` (0.1 by default);
//! - pods not yet ready, or without a sample, are left out of a scale-up's average
//!   only in the conservative direction: when scaling up they count as 0 % use, when
//!   scaling down as 100 %, so missing data never makes the change larger;
//! - scale-down is stabilized: the controller applies the highest recommendation of
//!   the last `downscale_stabilization` (300 s by default), so a short dip does not
//!   remove pods; scale-up applies at once;
//! - the result is clamped to `[min_replicas, max_replicas]`.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerSpec;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The HPA's target average CPU utilization (percent of the request), if it has one.
pub fn cpu_target_percent(spec: &HorizontalPodAutoscalerSpec) -> Option<i32> {
    spec.metrics
        .iter()
        .flatten()
        .filter_map(|m| m.resource.as_ref())
        .find(|r| r.name == "cpu" && r.target.type_ == "Utilization")
        .and_then(|r| r.target.average_utilization)
}

/// The controller's settings (kube-controller-manager flags and the HPA's spec).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Target mean CPU utilization, percent of the request.
    pub target_utilization: u32,
    /// `--horizontal-pod-autoscaler-tolerance`.
    pub tolerance: f64,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`.
    pub downscale_stabilization: Duration,
    /// `--horizontal-pod-autoscaler-sync-period`.
    pub sync_period: Duration,
}

impl Policy {
    /// Kubernetes' defaults around an HPA's own min, max and target.
    pub fn new(min_replicas: u32, max_replicas: u32, target_utilization: u32) -> Policy {
        Policy {
            min_replicas: min_replicas.max(1),
            max_replicas: max_replicas.max(min_replicas.max(1)),
            target_utilization: target_utilization.max(1),
            tolerance: 0.1,
            downscale_stabilization: Duration::from_secs(300),
            sync_period: Duration::from_secs(15),
        }
    }
}

/// One pod as the metrics pipeline sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodSample {
    /// Ready (its readiness probe passes).
    pub ready: bool,
    /// CPU used over the last window, in millicores; `None` without a sample yet.
    pub usage_millis: Option<f64>,
    /// The pod's CPU request, in millicores.
    pub request_millis: f64,
}

/// What one sync decided, and why (shown in status and events).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: u32,
    /// Mean utilization of the pods with samples, percent of request.
    pub utilization: Option<f64>,
    pub reason: String,
}

/// The recommendation before stabilization and clamping: `None` when no pod has a
/// sample (the controller then leaves the scale alone).
pub fn recommend(current: u32, pods: &[PodSample], policy: &Policy) -> Option<(u32, f64)> {
    let sampled: Vec<&PodSample> = pods
        .iter()
        .filter(|p| p.ready && p.usage_millis.is_some() && p.request_millis > 0.0)
        .collect();
    if sampled.is_empty() {
        return None;
    }
    let used: f64 = sampled.iter().filter_map(|p| p.usage_millis).sum();
    let requested: f64 = sampled.iter().map(|p| p.request_millis).sum();
    let utilization = 100.0 * used / requested;
    let target = f64::from(policy.target_utilization);
    let ratio = utilization / target;
    if (ratio - 1.0).abs() <= policy.tolerance {
        return Some((current, utilization));
    }
    // Pods without a sample count against the direction of the change.
    let missing: Vec<&PodSample> = pods
        .iter()
        .filter(|p| !(p.ready && p.usage_millis.is_some()) && p.request_millis > 0.0)
        .collect();
    let ratio = if missing.is_empty() {
        ratio
    } else {
        let assumed = if ratio > 1.0 { 0.0 } else { 1.0 };
        let extra_used: f64 = missing.iter().map(|p| assumed * p.request_millis).sum();
        let extra_req: f64 = missing.iter().map(|p| p.request_millis).sum();
        let adjusted = 100.0 * (used + extra_used) / (requested + extra_req) / target;
        // A rebalanced ratio that flips direction or lands in tolerance means no change.
        if (adjusted - 1.0).abs() <= policy.tolerance || (adjusted > 1.0) != (ratio > 1.0) {
            return Some((current, utilization));
        }
        adjusted
    };
    let counted = (sampled.len() + missing.len()) as f64;
    Some(((ratio * counted).ceil() as u32, utilization))
}

/// The controller's memory: recent recommendations, for scale-down stabilization.
#[derive(Debug, Default, Clone)]
pub struct Autoscaler {
    recommendations: VecDeque<(Instant, u32)>,
}

impl Autoscaler {
    /// One sync: the replicas the Deployment should have now.
    pub fn sync(
        &mut self,
        now: Instant,
        current: u32,
        pods: &[PodSample],
        policy: &Policy,
    ) -> Decision {
        let Some((raw, utilization)) = recommend(current, pods, policy) else {
            let desired = current.clamp(policy.min_replicas, policy.max_replicas);
            let reason = if desired == current {
                "no CPU samples from ready pods yet".to_string()
            } else {
                format!(
                    "no CPU samples yet; {current} is outside {}..={}: {current} -> {desired}",
                    policy.min_replicas, policy.max_replicas
                )
            };
            return Decision {
                desired,
                utilization: None,
                reason,
            };
        };
        self.recommendations.push_back((now, raw));
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > policy.downscale_stabilization)
        {
            self.recommendations.pop_front();
        }
        // Scale-down takes the highest recommendation of the window; scale-up is at once.
        let stabilized = if raw < current {
            self.recommendations
                .iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(raw)
                .min(current)
        } else {
            raw
        };
        let desired = stabilized.clamp(policy.min_replicas, policy.max_replicas);
        let reason = format!(
            "cpu {utilization:.0}% of request (target {}%): {current} -> {desired}{}",
            policy.target_utilization,
            if stabilized != raw {
                format!(
                    " (recommended {raw}, held by the {:?} scale-down window)",
                    policy.downscale_stabilization
                )
            } else if desired != stabilized {
                format!(
                    " (recommended {raw}, clamped to {}..={})",
                    policy.min_replicas, policy.max_replicas
                )
            } else {
                String::new()
            }
        );
        Decision {
            desired,
            utilization: Some(utilization),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(usages: &[f64]) -> Vec<PodSample> {
        usages
            .iter()
            .map(|&u| PodSample {
                ready: true,
                usage_millis: Some(u),
                request_millis: 500.0,
            })
            .collect()
    }

    #[test]
    fn busy_pods_scale_up_in_proportion() {
        let p = Policy::new(2, 6, 70);
        // 2 pods at 100% of a 500m request against a 70% target: ceil(2 × 100/70) = 3.
        assert_eq!(recommend(2, &pods(&[500.0, 500.0]), &p), Some((3, 100.0)));
        let mut a = Autoscaler::default();
        let d = a.sync(Instant::now(), 2, &pods(&[500.0, 500.0]), &p);
        assert_eq!(d.desired, 3, "{}", d.reason);
    }

    #[test]
    fn within_tolerance_nothing_changes() {
        let p = Policy::new(1, 6, 70);
        // 75% vs 70%: ratio 1.07, inside the 10% tolerance.
        assert_eq!(
            recommend(3, &pods(&[375.0, 375.0, 375.0]), &p).unwrap().0,
            3
        );
    }

    #[test]
    fn scale_up_is_clamped_to_max() {
        let p = Policy::new(2, 4, 50);
        let mut a = Autoscaler::default();
        let d = a.sync(Instant::now(), 2, &pods(&[1000.0, 1000.0]), &p);
        assert_eq!(d.desired, 4);
        assert!(d.reason.contains("clamped"), "{}", d.reason);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let mut p = Policy::new(1, 6, 50);
        p.downscale_stabilization = Duration::from_secs(60);
        let mut a = Autoscaler::default();
        let t0 = Instant::now();
        // Busy: 4 pods recommended.
        assert_eq!(a.sync(t0, 2, &pods(&[500.0, 500.0]), &p).desired, 4);
        // Idle 15 s later: the busy recommendation is still in the window.
        let idle = pods(&[10.0, 10.0, 10.0, 10.0]);
        let d = a.sync(t0 + Duration::from_secs(15), 4, &idle, &p);
        assert_eq!(d.desired, 4, "{}", d.reason);
        assert!(d.reason.contains("window"), "{}", d.reason);
        // Once the window has passed, it scales down (to min).
        let d = a.sync(t0 + Duration::from_secs(80), 4, &idle, &p);
        assert_eq!(d.desired, 1, "{}", d.reason);
    }

    #[test]
    fn unready_pods_never_make_a_scale_up_bigger() {
        let p = Policy::new(1, 10, 50);
        let mut ps = pods(&[500.0, 500.0]);
        ps.push(PodSample {
            ready: false,
            usage_millis: None,
            request_millis: 500.0,
        });
        // Ready pods at 100% (ratio 2); the starting pod counts as idle: 1000/1500
        // = 66.7% → ratio 1.33 over 3 pods → 4, not ceil(2 × 3) = 6.
        assert_eq!(recommend(3, &ps, &p).unwrap().0, 4);
    }

    #[test]
    fn without_samples_the_scale_is_left_alone() {
        let p = Policy::new(2, 6, 70);
        let starting = [PodSample {
            ready: false,
            usage_millis: None,
            request_millis: 500.0,
        }];
        assert_eq!(recommend(3, &starting, &p), None);
        let d = Autoscaler::default().sync(Instant::now(), 3, &starting, &p);
        assert_eq!(d.desired, 3);
        // Below minReplicas the controller still acts, and says why.
        let d = Autoscaler::default().sync(Instant::now(), 1, &starting, &p);
        assert_eq!(d.desired, 2);
        assert!(d.reason.contains("outside 2..=6"), "{}", d.reason);
    }
}
