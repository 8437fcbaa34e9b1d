//! Errors of the engine: planning, applying and state handling.

use crate::error::ProviderError;

/// Errors of the engine: planning, applying and state handling.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A provider operation failed on a named resource.
    #[error("{kind} `{resource}`: {error}")]
    Resource {
        /// Logical name of the resource.
        resource: String,
        /// Resource kind, e.g. `aws:lambda:Function`.
        kind: String,
        /// The provider's error (shown inline, so not also a `source`).
        error: Box<ProviderError>,
    },
    /// The declared graph has a cycle.
    #[error("dependency cycle between resources: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A resource references one that is not declared.
    #[error("resource `{from}` references undeclared resource `{to}`")]
    UnknownReference {
        /// The referencing resource.
        from: String,
        /// The missing one.
        to: String,
    },
    /// A declared resource's name is taken by one this stack does not own (not
    /// tagged with this stack): never adopted silently, since `down` would delete it.
    #[error(
        "{kind} `{resource}`: `{id}` already exists and is not this stack's ({found}); \
         rename it in the configuration, remove it, or take it over with \
         `stack import {resource} {id}`"
    )]
    NotOwned {
        /// Logical name of the declared resource.
        resource: String,
        /// Its kind.
        kind: String,
        /// The existing resource's id.
        id: String,
        /// What its tags say instead.
        found: String,
    },
    /// No provider is registered for a kind.
    #[error("no provider for resource kind `{0}`")]
    NoProvider(String),
    /// The declaration is invalid; nothing was called.
    #[error("invalid stack configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    /// Another process holds the state lock.
    #[error(
        "state is locked by {holder} (lock file {path}); wait for it to finish, or remove the lock file if that process is gone"
    )]
    Locked {
        /// Who holds the lock (pid, host, command, since).
        holder: String,
        /// The lock file.
        path: String,
    },
    /// Reading or writing the state failed.
    #[error("state {path}: {message}")]
    State {
        /// The state file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The apply stopped after one or more failures; state holds what was done.
    #[error("apply stopped, state saved with everything completed so far:\n  {}", .0.join("\n  "))]
    ApplyFailed(Vec<String>),
    /// The apply was interrupted (Ctrl-C or an injected fault); state is saved.
    #[error("apply interrupted ({0}); state saved, rerun `stack up` to converge")]
    Interrupted(String),
}
