//! The model server's Kubernetes objects, built from the configuration.
//!
//! The Deployment is shaped for a CPU-bound model server: the CPU limit equals the
//! inference threads (no throttling surprises, no idle cores), probes on `/readyz`
//! (model loaded) and `/healthz` (process alive), a `preStop` pause so endpoints are
//! removed before the server starts draining, a grace period covering pause + drain,
//! zone spread, and rolling updates that never drop below the declared replicas.

use serde_json::{Value, json};

use super::labels;
use crate::config::K8sConfig;
use crate::engine::Input;

/// Seconds the `preStop` hook pauses before the container gets SIGTERM (time for
/// the endpoint removal to reach every load balancer and kube-proxy).
pub const PRESTOP_PAUSE_S: i32 = 5;

fn meta(stack: &str, c: &K8sConfig, name: &str, namespaced: bool) -> Value {
    let mut m = json!({ "name": name, "labels": labels(stack, &c.app) });
    if namespaced {
        m["namespace"] = c.namespace.clone().into();
    }
    m
}

fn selector(c: &K8sConfig) -> Value {
    json!({ "app.kubernetes.io/name": c.app })
}

/// The namespace.
pub fn namespace(stack: &str, c: &K8sConfig) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": meta(stack, c, &c.namespace, false),
    })
}

/// The server Deployment running `image`.
pub fn deployment(stack: &str, c: &K8sConfig, image: &Input<String>) -> Value {
    let image = serde_json::to_value(image).unwrap_or(Value::Null);
    let env: Vec<Value> = c
        .model_env
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    let cpu = c.threads.to_string();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(stack, c, &c.app, true),
        "spec": {
            "replicas": c.replicas,
            "selector": { "matchLabels": selector(c) },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 }
            },
            "template": {
                "metadata": { "labels": labels(stack, &c.app) },
                "spec": {
                    "terminationGracePeriodSeconds": PRESTOP_PAUSE_S + c.drain_s + 5,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532
                    },
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": { "matchLabels": selector(c) }
                    }],
                    "containers": [{
                        "name": "server",
                        "image": image,
                        "args": [
                            "--bind", format!("0.0.0.0:{}", c.port),
                            "--model-dir", c.model_env.get("MODEL_DIR").cloned().unwrap_or_else(|| "/models".into())
                        ],
                        "ports": [{ "name": "http", "containerPort": c.port, "protocol": "TCP" }],
                        "env": env,
                        "resources": {
                            "requests": { "cpu": cpu, "memory": c.memory },
                            "limits": { "cpu": cpu, "memory": c.memory }
                        },
                        "readinessProbe": {
                            "httpGet": { "path": "/readyz", "port": "http" },
                            "periodSeconds": 5,
                            "failureThreshold": 2
                        },
                        "livenessProbe": {
                            "httpGet": { "path": "/healthz", "port": "http" },
                            "initialDelaySeconds": 10,
                            "periodSeconds": 10,
                            "failureThreshold": 3
                        },
                        "lifecycle": {
                            "preStop": { "sleep": { "seconds": PRESTOP_PAUSE_S } }
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] }
                        }
                    }]
                }
            }
        }
    })
}

/// The Service in front of the Deployment.
pub fn service(stack: &str, c: &K8sConfig) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(stack, c, &c.app, true),
        "spec": {
            "type": c.service_type,
            "selector": selector(c),
            "ports": [{ "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" }]
        }
    })
}

/// CPU-based autoscaling with a scale-down stabilization window (EKS needs
/// metrics-server for the CPU metric: declared as an EKS add-on).
pub fn hpa(stack: &str, c: &K8sConfig) -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(stack, c, &c.app, true),
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": c.app },
            "minReplicas": c.min_replicas,
            "maxReplicas": c.max_replicas,
            "metrics": [{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": { "type": "Utilization", "averageUtilization": c.cpu_target_percent }
                }
            }],
            "behavior": {
                "scaleDown": { "stabilizationWindowSeconds": c.scale_down_window_s },
                "scaleUp": { "stabilizationWindowSeconds": 0 }
            }
        }
    })
}

/// The annotation naming what supplies the HPA's CPU metric (the `metrics-server`
/// add-on on EKS): a reference, so the HPA is applied after it.
pub const METRICS_ANNOTATION: &str = "stack.sentiment/metrics-source";

/// `hpa` annotated with its metrics source (and so depending on it).
pub fn with_metrics_source(mut hpa: Value, source: &Input<String>) -> Value {
    hpa["metadata"]["annotations"] =
        json!({ METRICS_ANNOTATION: serde_json::to_value(source).unwrap_or(Value::Null) });
    hpa
}

/// Keeps all but one replica up through voluntary disruptions (node drains).
pub fn pdb(stack: &str, c: &K8sConfig) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(stack, c, &c.app, true),
        "spec": {
            "maxUnavailable": 1,
            "selector": { "matchLabels": selector(c) }
        }
    })
}
