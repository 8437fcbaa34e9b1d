//! Error types of the library. The binary wraps them with `anyhow` at its edge.

use std::fmt;

/// An error from a provider operation on one resource.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The cloud API answered with an error (or could not be reached).
    #[error("{op} failed: {code}: {message}{}", hint_suffix(.hint))]
    Api {
        /// The API operation, e.g. `lambda:CreateFunction`.
        op: String,
        /// The AWS error code, or `DispatchFailure`/`Unknown` when there is none.
        code: String,
        /// The error message returned by the service.
        message: String,
        /// What the user can do about it.
        hint: Option<&'static str>,
    },
    /// The resolved properties could not be interpreted by the provider.
    #[error("invalid properties: {0}")]
    Props(String),
    /// A waiter gave up before the resource reached the expected state.
    #[error("{op}: timed out after {secs}s waiting for {what}")]
    Timeout {
        /// The operation that was waiting.
        op: String,
        /// The state that was awaited.
        what: String,
        /// How long it waited.
        secs: u64,
    },
    /// A local artifact (e.g. the Lambda zip) could not be read.
    #[error("artifact {path}: {source}")]
    Artifact {
        /// The path of the artifact.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn hint_suffix(h: &Option<&'static str>) -> String {
    h.map(|h| format!(" (hint: {h})")).unwrap_or_default()
}

impl ProviderError {
    /// The AWS error code, if this is an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ProviderError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the error says the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code().is_some_and(is_not_found_code)
    }
}

/// Error codes that mean "no such resource" across the services we use.
pub fn is_not_found_code(code: &str) -> bool {
    matches!(
        code,
        "NoSuchEntity"
            | "ResourceNotFoundException"
            | "RepositoryNotFoundException"
            | "NotFoundException"
            | "NotFound"
            | "NoSuchBucket"
            | "NoSuchKey"
            | "InvalidVpcID.NotFound"
            | "InvalidSubnetID.NotFound"
    ) || code.ends_with(".NotFound")
}

/// A hint for the user derived from an AWS error code.
pub fn hint_for(code: &str) -> Option<&'static str> {
    let c = code.to_ascii_lowercase();
    if c.contains("accessdenied") || c.contains("unauthorized") {
        Some("the credentials lack permission for this call; check the IAM policy of the caller")
    } else if c.contains("invalidclienttokenid")
        || c.contains("unrecognizedclient")
        || c.contains("expiredtoken")
        || c.contains("signaturedoesnotmatch")
        || c.contains("credentials")
    {
        Some(
            "check the AWS credentials (profile, env vars, SSO session) and that they are not expired",
        )
    } else if c.contains("limitexceeded") || c.contains("quota") {
        Some("a service quota is exhausted; delete unused resources or request a quota increase")
    } else if c.contains("throttl") || c.contains("toomanyrequests") {
        Some("the API throttled us beyond the SDK's retries; lower --parallelism and retry")
    } else if c == "dispatchfailure" || c == "timeout" {
        Some(
            "the endpoint could not be reached: check --endpoint-url/AWS_ENDPOINT_URL (is the local server running?) and the region",
        )
    } else if c.contains("invalidparameter") || c.contains("validation") || c.contains("badrequest")
    {
        Some("the service rejected a property value; check the stack configuration")
    } else {
        None
    }
}

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

/// A short display wrapper for JSON values in diffs.
pub struct Short<'a>(pub &'a serde_json::Value);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.as_str() == Some(crate::engine::UNKNOWN) {
            return f.write_str(crate::engine::UNKNOWN);
        }
        let s = serde_json::to_string(self.0).map_err(|_| fmt::Error)?;
        if s.len() > 120 {
            write!(
                f,
                "{}…",
                &s[..s.char_indices().nth(117).map_or(s.len(), |(i, _)| i)]
            )
        } else {
            f.write_str(&s)
        }
    }
}
