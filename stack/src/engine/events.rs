//! What plan and apply report, as values: the engine prints nothing itself. The
//! caller supplies an [`Events`] sink (a closure or a channel) and renders what it
//! receives (the CLI: progress bars on a terminal, one line per change in CI, JSON
//! lines with `--json`).
//!
//! Providers report how a long operation is going with [`status`], without knowing
//! the sink: the engine runs every resource operation inside [`scoped`], which sets a
//! task-local scope (the sink, resource, kind, operation and start time) and a
//! `tracing` span `resource{resource, kind, op}`. Outside a scope (a provider used
//! directly, in tests) [`status`] only logs at debug level.

use serde::{Serialize, Serializer};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use super::plan::{Action, FieldChange};

/// The operation on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Reading what exists.
    Read,
    /// Creating.
    Create,
    /// Updating in place.
    Update,
    /// Replacing (delete + create, or create + delete).
    Replace,
    /// Deleting.
    Delete,
}

impl Op {
    /// The operation that carries out `action` (`Read` for a no-op).
    pub fn of(action: &Action) -> Op {
        match action {
            Action::NoOp => Op::Read,
            Action::Create => Op::Create,
            Action::Update => Op::Update,
            Action::Replace { .. } => Op::Replace,
            Action::Delete => Op::Delete,
        }
    }
    /// "creating", "updating"...
    pub fn doing(self) -> &'static str {
        match self {
            Op::Read => "reading",
            Op::Create => "creating",
            Op::Update => "updating",
            Op::Replace => "replacing",
            Op::Delete => "deleting",
        }
    }
    /// "created", "updated"...
    pub fn done(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Create => "created",
            Op::Update => "updated",
            Op::Replace => "replaced",
            Op::Delete => "deleted",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Create => "create",
            Op::Update => "update",
            Op::Replace => "replace",
            Op::Delete => "delete",
        })
    }
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// One thing plan or apply reports. Serialized (`--json`) with an `event` tag and
/// durations in seconds (`elapsed_s`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The plan decided what to do with a resource (emitted for every changed one).
    Planned {
        /// Logical name.
        resource: String,
        /// Kind.
        kind: String,
        /// The decision.
        action: Action,
        /// The changed fields (nested paths).
        changes: Vec<FieldChange>,
    },
    /// An operation on a resource started.
    Started {
        /// Logical name.
        resource: String,
        /// Kind.
        kind: String,
        /// The operation.
        op: Op,
    },
    /// A provider reported how a running operation is going (`CREATING`,
    /// `1/2 updated, 0 available`).
    Waiting {
        /// Logical name.
        resource: String,
        /// Kind.
        kind: String,
        /// The operation.
        op: Op,
        /// Since the operation started.
        #[serde(rename = "elapsed_s", serialize_with = "secs")]
        elapsed: Duration,
        /// The provider's status message.
        status: String,
    },
    /// An operation finished.
    Done {
        /// Logical name.
        resource: String,
        /// Kind.
        kind: String,
        /// The operation.
        op: Op,
        /// How long it took.
        #[serde(rename = "elapsed_s", serialize_with = "secs")]
        elapsed: Duration,
        /// Set when nothing was really created or changed because something else
        /// stands in for the resource on this target (see [`stand_in`]): what does.
        #[serde(skip_serializing_if = "Option::is_none")]
        stand_in: Option<String>,
    },
    /// An operation failed; the apply stops launching new work.
    Failed {
        /// Logical name.
        resource: String,
        /// Kind.
        kind: String,
        /// The operation.
        op: Op,
        /// The provider's error.
        error: String,
    },
    /// Ctrl-C: running operations finish, state is saved, nothing new starts.
    Interrupted {
        /// Operations still running.
        running: usize,
    },
    /// Something the user should know that is not about one resource (a stale lock
    /// taken over).
    Note {
        /// The message.
        message: String,
    },
}

impl Event {
    /// The resource the event is about, if any.
    pub fn resource(&self) -> Option<&str> {
        match self {
            Event::Planned { resource, .. }
            | Event::Started { resource, .. }
            | Event::Waiting { resource, .. }
            | Event::Done { resource, .. }
            | Event::Failed { resource, .. } => Some(resource),
            Event::Interrupted { .. } | Event::Note { .. } => None,
        }
    }
}

type SinkFn = dyn Fn(Event) + Send + Sync;

/// Where events go. Cheap to clone; the default discards them.
#[derive(Clone, Default)]
pub struct Events(Option<Arc<SinkFn>>);

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Events(sink)"
        } else {
            "Events(none)"
        })
    }
}

impl Events {
    /// A sink that discards everything.
    pub fn none() -> Events {
        Events(None)
    }
    /// A sink calling `f` for every event (on the emitting task: keep it short).
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Events {
        Events(Some(Arc::new(f)))
    }
    /// A sink feeding an unbounded channel, and its receiving end.
    pub fn channel() -> (Events, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            Events::new(move |e| {
                let _ = tx.send(e);
            }),
            rx,
        )
    }
    /// Reports one event.
    pub fn emit(&self, e: Event) {
        tracing::debug!(event = ?e, "engine event");
        if let Some(f) = &self.0 {
            f(e);
        }
    }
}

struct Scope {
    events: Events,
    resource: String,
    kind: String,
    op: Op,
    start: Instant,
    stand_in: std::sync::Mutex<Option<String>>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs one resource operation inside its scope: [`status`] calls made by the
/// provider while `fut` runs become [`Event::Waiting`] on `events`, and everything it
/// logs is inside the span `resource{resource, kind, op}`. Returns `fut`'s output and
/// what the provider said stands in for the resource ([`stand_in`]), if anything.
pub async fn scoped<F: Future>(
    events: &Events,
    resource: &str,
    kind: &str,
    op: Op,
    fut: F,
) -> (F::Output, Option<String>) {
    let span = tracing::info_span!("resource", resource, kind, op = %op);
    let scope = Scope {
        events: events.clone(),
        resource: resource.to_string(),
        kind: kind.to_string(),
        op,
        start: Instant::now(),
        stand_in: std::sync::Mutex::new(None),
    };
    SCOPE
        .scope(scope, async {
            let out = fut.instrument(span).await;
            let stand_in = SCOPE.with(|s| s.stand_in.lock().ok().and_then(|mut g| g.take()));
            (out, stand_in)
        })
        .await
}

/// Says that the running operation did not really create or change anything because
/// something else stands in for the resource on this target (an EKS add-on provided
/// by the local control plane): the apply reports `what` instead of "created".
pub fn stand_in(what: impl Into<String>) {
    let what = what.into();
    let _ = SCOPE.try_with(|s| {
        if let Ok(mut g) = s.stand_in.lock() {
            *g = Some(what);
        }
    });
}

/// Reports the status of the running resource operation (`"CREATING"`, `"waiting for
/// cluster ACTIVE"`, `"1/2 updated, 0 available"`). Providers call this freely: it
/// reaches the sink of the engine scope it runs in, if any.
pub fn status(message: impl Into<String>) {
    let message = message.into();
    tracing::debug!(status = %message, "waiting");
    let _ = SCOPE.try_with(|s| {
        s.events.emit(Event::Waiting {
            resource: s.resource.clone(),
            kind: s.kind.clone(),
            op: s.op,
            elapsed: s.start.elapsed(),
            status: message,
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn status_reaches_the_sink_of_its_scope_only() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let events = Events::new(move |e| g.lock().unwrap().push(e));
        status("outside any scope");
        scoped(
            &events,
            "eks-cluster",
            "aws:eks:Cluster",
            Op::Create,
            async {
                status("CREATING");
            },
        )
        .await;
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        match &got[0] {
            Event::Waiting {
                resource,
                op,
                status,
                ..
            } => {
                assert_eq!(resource, "eks-cluster");
                assert_eq!(*op, Op::Create);
                assert_eq!(status, "CREATING");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stand_in_said_in_scope_comes_back_with_the_output() {
        let (out, stand_in) = scoped(&Events::none(), "addon", "k", Op::Create, async {
            stand_in("provided by the local control plane");
            7
        })
        .await;
        assert_eq!(out, 7);
        assert_eq!(
            stand_in.as_deref(),
            Some("provided by the local control plane")
        );
        let (_, none) = scoped(&Events::none(), "r", "k", Op::Create, async {}).await;
        assert_eq!(none, None);
    }

    #[tokio::test]
    async fn channel_sink_delivers_in_order() {
        let (events, mut rx) = Events::channel();
        events.emit(Event::Note {
            message: "a".into(),
        });
        events.emit(Event::Interrupted { running: 2 });
        assert_eq!(
            rx.recv().await,
            Some(Event::Note {
                message: "a".into()
            })
        );
        assert_eq!(rx.recv().await, Some(Event::Interrupted { running: 2 }));
    }

    #[test]
    fn json_shape() {
        let e = Event::Done {
            resource: "r".into(),
            kind: "k".into(),
            op: Op::Create,
            elapsed: Duration::from_millis(1500),
            stand_in: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event": "done", "resource": "r", "kind": "k", "op": "create", "elapsed_s": 1.5})
        );
    }
}
