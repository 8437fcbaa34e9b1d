//! The model server on Kubernetes, after the node group (nothing can run before):
//! its objects, built from the configuration as typed
//! `k8s-openapi` values and serialized to the JSON the generic k8s provider applies.
//!
//! The Deployment is shaped for a CPU-bound model server: the CPU limit equals the
//! inference threads (no throttling surprises, no idle cores), probes on `/readyz`
//! (model loaded) and `/healthz` (process alive), a `preStop` pause so endpoints are
//! removed before the server starts draining, a grace period covering pause + drain,
//! zone spread, and rolling updates that never drop below the current replicas.
//!
//! The Deployment declares no `spec.replicas`: the HPA owns the count (between
//! `min_replicas` and `max_replicas`), and a manifest that named one would reset it on
//! every apply, fighting the autoscaler (Kubernetes' own advice for HPA targets). The
//! API server defaults a new Deployment to 1 replica; the HPA raises it to
//! `min_replicas` at its first sync.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, Lifecycle, LifecycleHandler,
    Namespace, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, TopologySpreadConstraint,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use std::path::Path;

use super::BuildOptions;
use crate::artifacts::image::ServerImage;
use crate::config::{Config, K8sConfig};
use crate::engine::{Handle, Input, Stack};
use crate::providers::aws::{ecr, eks};
use crate::providers::k8s::{self, labels};

/// Seconds the `preStop` hook pauses before the container gets SIGTERM (time for
/// the endpoint removal to reach every load balancer and kube-proxy).
pub const PRESTOP_PAUSE_S: i32 = 5;

fn to_json<T: Serialize>(o: &T) -> Value {
    // Serializing k8s-openapi types to JSON cannot fail (string keys, no floats).
    serde_json::to_value(o).unwrap_or(Value::Null)
}

fn label_map(stack: &str, c: &K8sConfig) -> BTreeMap<String, String> {
    serde_json::from_value(labels(stack, &c.app)).unwrap_or_default()
}

fn meta(stack: &str, c: &K8sConfig, name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespaced.then(|| c.namespace.clone()),
        labels: Some(label_map(stack, c)),
        ..ObjectMeta::default()
    }
}

fn selector(c: &K8sConfig) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_string(), c.app.clone())])
}

fn label_selector(c: &K8sConfig) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector(c)),
        ..LabelSelector::default()
    }
}

fn http_probe(path: &str, initial_delay: Option<i32>, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: initial_delay,
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The namespace.
pub fn namespace(stack: &str, c: &K8sConfig) -> Value {
    to_json(&Namespace {
        metadata: meta(stack, c, &c.namespace, false),
        ..Namespace::default()
    })
}

/// The server container running `image` (a placeholder here: see [`deployment`]).
fn container(c: &K8sConfig) -> Container {
    let cpu = Quantity(c.threads.to_string());
    let resources = BTreeMap::from([
        ("cpu".to_string(), cpu),
        ("memory".to_string(), Quantity(c.memory.clone())),
    ]);
    // The server reads its port and model directory from the environment (`PORT`,
    // `MODEL_DIR`): flags here would repeat the image's, and the local kubelet gives
    // each pod its own port by setting `PORT`.
    let mut env: BTreeMap<String, String> = c.model_env.clone();
    env.insert("PORT".into(), c.port.to_string());
    Container {
        name: "server".into(),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: c.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(
            env.iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..EnvVar::default()
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(http_probe("/readyz", None, 5, 2)),
        liveness_probe: Some(http_probe("/healthz", Some(10), 10, 3)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: i64::from(PRESTOP_PAUSE_S),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The server Deployment running `image`.
pub fn deployment(stack: &str, c: &K8sConfig, image: &Input<String>) -> Value {
    let d = Deployment {
        metadata: meta(stack, c, &c.app, true),
        spec: Some(DeploymentSpec {
            // Owned by the HPA: see the module's documentation.
            replicas: None,
            selector: label_selector(c),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(label_map(stack, c)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(i64::from(
                        PRESTOP_PAUSE_S + c.drain_s + 5,
                    )),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        ..PodSecurityContext::default()
                    }),
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "topology.kubernetes.io/zone".into(),
                        when_unsatisfiable: "ScheduleAnyway".into(),
                        label_selector: Some(label_selector(c)),
                        ..TopologySpreadConstraint::default()
                    }]),
                    containers: vec![container(c)],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let mut v = to_json(&d);
    // The image may be a reference (the built image's digest, known after apply),
    // which the typed `Container::image` cannot hold: it goes in as the engine's
    // input value.
    v["spec"]["template"]["spec"]["containers"][0]["image"] =
        serde_json::to_value(image).unwrap_or(Value::Null);
    v
}

/// The Service in front of the Deployment.
pub fn service(stack: &str, c: &K8sConfig) -> Value {
    to_json(&Service {
        metadata: meta(stack, c, &c.app, true),
        spec: Some(ServiceSpec {
            type_: Some(c.service_type.clone()),
            selector: Some(selector(c)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// CPU-based autoscaling with a scale-down stabilization window (EKS needs
/// metrics-server for the CPU metric: declared as an EKS add-on).
pub fn hpa(stack: &str, c: &K8sConfig) -> Value {
    let window = |s: i32| HPAScalingRules {
        stabilization_window_seconds: Some(s),
        ..HPAScalingRules::default()
    };
    to_json(&HorizontalPodAutoscaler {
        metadata: meta(stack, c, &c.app, true),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: c.app.clone(),
            },
            min_replicas: Some(c.min_replicas),
            max_replicas: c.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(c.cpu_target_percent),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(window(c.scale_down_window_s)),
                scale_up: Some(window(0)),
            }),
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

/// The annotation naming what supplies the HPA's CPU metric (the `metrics-server`
/// add-on on EKS): a reference, so the HPA is applied after it.
pub const METRICS_ANNOTATION: &str = "stack.sentiment/metrics-source";

/// `hpa` annotated with its metrics source (and so depending on it). The source is a
/// reference, so it goes in as the engine's input value, not a typed annotation.
pub fn with_metrics_source(mut hpa: Value, source: &Input<String>) -> Value {
    hpa["metadata"]["annotations"] =
        json!({ METRICS_ANNOTATION: serde_json::to_value(source).unwrap_or(Value::Null) });
    hpa
}

/// Keeps all but one replica up through voluntary disruptions (node drains).
pub fn pdb(stack: &str, c: &K8sConfig) -> Value {
    to_json(&PodDisruptionBudget {
        metadata: meta(stack, c, &c.app, true),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(label_selector(c)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// The Deployment's image where no image is declared and none is needed (`down`,
/// `synth --k8s` without a server binary).
const NOT_BUILT: &str = "sentiment-server:not-built";

/// Declares the server image (unless `k8s.image` names one), the namespace,
/// Deployment, Service, HPA (with metrics-server as an EKS add-on) and PDB.
pub fn declare(
    s: &mut Stack,
    cfg: &Config,
    server_repo: &Handle<ecr::Repository>,
    cluster: &Handle<eks::Cluster>,
    nodes: &Handle<eks::NodeGroup>,
    opts: BuildOptions,
) -> Handle<k8s::Service> {
    let stack_name = cfg.stack.clone();
    let kc = &cfg.k8s;
    if kc.threads < 1 || kc.min_replicas < 1 || kc.max_replicas < kc.min_replicas {
        s.invalid("k8s: threads and min_replicas must be >= 1, max_replicas >= min_replicas");
    }
    // The image: the configured reference, else built from the server binary and
    // pushed to the server repository. A missing binary is an error where the
    // artifacts are needed (never a silent fallback to a tag nothing pushed).
    let image: Input<String> = if let Some(image) = &kc.image {
        Input::Value(image.clone())
    } else if !Path::new(&kc.server_binary).is_file() {
        if opts.artifacts {
            s.invalid(format!(
                "k8s: the server image needs `{}` (k8s.server_binary / STACK_SERVER_BIN), \
                 which does not exist: build it (`make up` does), or set k8s.image to an \
                 image the nodes can pull",
                kc.server_binary
            ));
        }
        Input::Value(NOT_BUILT.into())
    } else {
        match ServerImage::new(
            server_repo.output("url").into(),
            &kc.server_binary,
            u16::try_from(kc.port).unwrap_or(8080),
            kc.model_env.clone(),
        )
        .and_then(|img| img.with_model(kc.model_dir.as_deref()))
        {
            Ok(img) => {
                let img = img.on_base(kc.base_image.clone());
                let img = s.add("server-image", img);
                img.output::<String>("uri").into()
            }
            Err(e) => {
                s.invalid(e);
                Input::Value(NOT_BUILT.into())
            }
        }
    };
    let ns = s.add("k8s-namespace", k8s::Namespace(namespace(&stack_name, kc)));
    s.depends_on(&ns, nodes);
    let deploy = s.add(
        "k8s-deployment",
        k8s::Deployment(deployment(&stack_name, kc, &image)),
    );
    s.depends_on(&deploy, &ns);
    let svc = s.add("k8s-service", k8s::Service(service(&stack_name, kc)));
    s.depends_on(&svc, &ns);
    // The HPA's CPU metric comes from metrics-server: an EKS add-on, after the nodes
    // (its pods need somewhere to run), before the HPA (which references it).
    let metrics = s.add(
        "eks-metrics-server",
        eks::Addon {
            cluster: cluster.output("name").into(),
            name: "metrics-server".into(),
            version: cfg.eks.metrics_server_version.clone(),
            tags: Default::default(),
        },
    );
    s.depends_on(&metrics, nodes);
    let hpa = s.add(
        "k8s-hpa",
        k8s::HorizontalPodAutoscaler(with_metrics_source(
            hpa(&stack_name, kc),
            &metrics.output::<String>("name").into(),
        )),
    );
    s.depends_on(&hpa, &deploy);
    let pdb = s.add("k8s-pdb", k8s::PodDisruptionBudget(pdb(&stack_name, kc)));
    s.depends_on(&pdb, &ns);
    // The objects live in the cluster: a new cluster gets them applied again, and the
    // old one loses them (the Service's load balancer with it) before it is deleted.
    s.lives_in(&ns, cluster);
    s.lives_in(&deploy, cluster);
    s.lives_in(&svc, cluster);
    s.lives_in(&hpa, cluster);
    s.lives_in(&pdb, cluster);
    svc
}
