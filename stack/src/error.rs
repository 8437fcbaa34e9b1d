//! Provider errors and AWS error-code helpers. A leaf module: it imports nothing of
//! the crate (the engine's own errors live in [`crate::engine::EngineError`]).

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
