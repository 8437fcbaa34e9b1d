//! AWS providers over the AWS SDK for Rust. The same code serves real AWS and a local
//! endpoint (moto); only the SDK configuration differs (see [`AwsTarget`]).

pub mod apigw;
pub mod ec2;
pub mod ecr;
pub mod eks;
pub mod iam;
pub mod lambda;
pub mod logs;
pub mod s3;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Registry;
use crate::error::{ProviderError, hint_for};

/// Where the SDK points.
#[derive(Debug, Clone)]
pub enum AwsTarget {
    /// A local AWS-compatible endpoint (moto) with dummy credentials.
    Local {
        /// Endpoint URL, e.g. `http://127.0.0.1:5000`.
        endpoint: String,
    },
    /// Real AWS with the default credential chain.
    Aws,
}

/// The SDK clients of every service the providers use, sharing one configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    /// Region.
    pub region: String,
    /// ECR.
    pub ecr: aws_sdk_ecr::Client,
    /// IAM.
    pub iam: aws_sdk_iam::Client,
    /// Lambda.
    pub lambda: aws_sdk_lambda::Client,
    /// API Gateway v2.
    pub apigw: aws_sdk_apigatewayv2::Client,
    /// EKS.
    pub eks: aws_sdk_eks::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// EC2 (VPC, subnets).
    pub ec2: aws_sdk_ec2::Client,
    /// STS (account id).
    pub sts: aws_sdk_sts::Client,
    /// S3 (Lambda zips over the direct-upload limit). Path-style on the local target.
    pub s3: aws_sdk_s3::Client,
    /// How long to wait for slow resources (EKS cluster, node group).
    pub wait_timeout: Duration,
    /// The shared SDK configuration (credentials for the EKS token).
    pub sdk: aws_config::SdkConfig,
    account: Arc<tokio::sync::OnceCell<String>>,
}

impl Clients {
    /// Loads the SDK configuration for a target and builds every client. Throttling
    /// and transient errors are retried with backoff by the SDK's standard retry mode.
    pub async fn new(target: &AwsTarget, region: &str) -> Clients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .retry_config(RetryConfig::standard().with_max_attempts(5));
        if let AwsTarget::Local { endpoint } = target {
            loader = loader.endpoint_url(endpoint).credentials_provider(
                aws_sdk_sts::config::Credentials::new("test", "test", None, None, "stack-local"),
            );
        }
        let conf = loader.load().await;
        Clients {
            region: region.to_string(),
            ecr: aws_sdk_ecr::Client::new(&conf),
            iam: aws_sdk_iam::Client::new(&conf),
            lambda: aws_sdk_lambda::Client::new(&conf),
            apigw: aws_sdk_apigatewayv2::Client::new(&conf),
            eks: aws_sdk_eks::Client::new(&conf),
            logs: aws_sdk_cloudwatchlogs::Client::new(&conf),
            ec2: aws_sdk_ec2::Client::new(&conf),
            sts: aws_sdk_sts::Client::new(&conf),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&conf)
                    .force_path_style(matches!(target, AwsTarget::Local { .. }))
                    .build(),
            ),
            wait_timeout: Duration::from_secs(
                std::env::var("STACK_WAIT_TIMEOUT_SECS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1800),
            ),
            account: Arc::default(),
            sdk: conf,
        }
    }

    /// The account id of the caller (asked once per process).
    pub async fn account_id(&self) -> Result<String, ProviderError> {
        let id = self
            .account
            .get_or_try_init(|| async {
                let r = self.sts.get_caller_identity().send().await;
                let r = r.map_err(|e| api("sts:GetCallerIdentity", e))?;
                Ok::<_, ProviderError>(r.account.unwrap_or_default())
            })
            .await?;
        Ok(id.clone())
    }
}

/// Registers every AWS resource kind.
pub fn register(reg: &mut Registry, c: &Arc<Clients>) {
    reg.register(ecr::KIND, Arc::new(ecr::RepositoryProvider(c.clone())));
    reg.register(iam::ROLE_KIND, Arc::new(iam::RoleProvider(c.clone())));
    reg.register(
        iam::ATTACH_KIND,
        Arc::new(iam::AttachmentProvider(c.clone())),
    );
    reg.register(logs::KIND, Arc::new(logs::LogGroupProvider(c.clone())));
    reg.register(
        lambda::FUNCTION_KIND,
        Arc::new(lambda::FunctionProvider(c.clone())),
    );
    reg.register(
        lambda::PERMISSION_KIND,
        Arc::new(lambda::PermissionProvider(c.clone())),
    );
    reg.register(apigw::API_KIND, Arc::new(apigw::ApiProvider(c.clone())));
    reg.register(
        apigw::INTEGRATION_KIND,
        Arc::new(apigw::IntegrationProvider(c.clone())),
    );
    reg.register(apigw::ROUTE_KIND, Arc::new(apigw::RouteProvider(c.clone())));
    reg.register(apigw::STAGE_KIND, Arc::new(apigw::StageProvider(c.clone())));
    reg.register(ec2::VPC_KIND, Arc::new(ec2::VpcProvider(c.clone())));
    reg.register(ec2::SUBNET_KIND, Arc::new(ec2::SubnetProvider(c.clone())));
    reg.register(
        ec2::IGW_KIND,
        Arc::new(ec2::InternetGatewayProvider(c.clone())),
    );
    reg.register(
        ec2::ROUTE_TABLE_KIND,
        Arc::new(ec2::RouteTableProvider(c.clone())),
    );
    reg.register(eks::CLUSTER_KIND, Arc::new(eks::ClusterProvider(c.clone())));
    reg.register(
        eks::NODEGROUP_KIND,
        Arc::new(eks::NodeGroupProvider(c.clone())),
    );
    reg.register(s3::BUCKET_KIND, Arc::new(s3::BucketProvider(c.clone())));
    reg.register(s3::OBJECT_KIND, Arc::new(s3::ObjectProvider(c.clone())));
    // Real EKS add-ons; the local target replaces this provider when its endpoint has
    // no add-on API (see `eks::AddonProvider`).
    reg.register(
        eks::ADDON_KIND,
        Arc::new(eks::AddonProvider::Api(c.clone())),
    );
}

/// Converts an SDK error into a [`ProviderError`] with the AWS code and a hint.
pub fn api<E, R>(op: &str, e: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, message) = match &e {
        SdkError::DispatchFailure(_) => ("DispatchFailure".to_string(), chain(&e)),
        SdkError::TimeoutError(_) => ("Timeout".to_string(), chain(&e)),
        _ => (
            e.code().unwrap_or("Unknown").to_string(),
            e.message()
                .map(str::to_string)
                .unwrap_or_else(|| DisplayErrorContext(&e).to_string()),
        ),
    };
    let hint = hint_for(&code);
    ProviderError::Api {
        op: op.into(),
        code,
        message,
        hint,
    }
}

/// An error with its root cause, e.g. `dispatch failure: Connection refused (os error 111)`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e.source();
    while let Some(next) = root.and_then(|c| c.source()) {
        root = Some(next);
    }
    match root {
        Some(r) => format!("{e}: {r}"),
        None => e.to_string(),
    }
}

/// `Ok(None)` for a not-found error, the error otherwise.
pub fn none_if_missing<T>(r: Result<T, ProviderError>) -> Result<Option<T>, ProviderError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `Ok(())` for a not-found error (deleting something already gone).
pub fn ok_if_missing(r: Result<(), ProviderError>) -> Result<(), ProviderError> {
    none_if_missing(r).map(|_| ())
}

/// Tags as a sorted map.
pub type Tags = BTreeMap<String, String>;

/// Observed tags without the AWS-reserved ones (`aws:*`), which nobody can set.
pub fn user_tags<I: IntoIterator<Item = (String, String)>>(it: I) -> Tags {
    it.into_iter()
        .filter(|(k, _)| !k.starts_with("aws:"))
        .collect()
}

/// Tags to add/change and keys to remove to go from `old` to `new`.
pub fn tag_delta(old: &Tags, new: &Tags) -> (Tags, Vec<String>) {
    let set = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let rm = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (set, rm)
}

/// Applies the tag changes from `old` to `new` through a service's own tag and untag
/// calls, each made only when it has something to do.
pub async fn retag<S, SF, R, RF>(old: &Tags, new: &Tags, set: S, rm: R) -> Result<(), ProviderError>
where
    S: FnOnce(Tags) -> SF,
    SF: std::future::Future<Output = Result<(), ProviderError>>,
    R: FnOnce(Vec<String>) -> RF,
    RF: std::future::Future<Output = Result<(), ProviderError>>,
{
    let (add, remove) = tag_delta(old, new);
    if !add.is_empty() {
        set(add).await?;
    }
    if !remove.is_empty() {
        rm(remove).await?;
    }
    Ok(())
}

/// The `arn` output of a resource just read (empty when the read found nothing).
pub fn arn_output(outputs: &serde_json::Map<String, serde_json::Value>) -> String {
    outputs
        .get("arn")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Retries `f` while it fails with an error `retryable` accepts, with exponential
/// backoff up to `max` total. Used for eventual consistency (a new IAM role not yet
/// assumable by Lambda), never as a blind sleep.
pub async fn retry_on<T, F, Fut>(
    max: Duration,
    retryable: impl Fn(&ProviderError) -> bool,
    mut f: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        match f().await {
            Err(e) if retryable(&e) && start.elapsed() + delay < max => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            r => return r,
        }
    }
}

/// A resource's outputs from a `json!({...})` object literal.
pub fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The two parts of a composite resource id `a|b` (`b` empty when there is no `|`).
pub fn split_id(id: &str) -> (&str, &str) {
    id.split_once('|').unwrap_or((id, ""))
}

/// Awaits an SDK waiter (built with `.wait(timeout)`) until `what` holds, mapping its
/// failure to a [`ProviderError`] named after the describe call `op` it polls.
pub async fn wait_for<T, E: std::fmt::Display>(
    op: &str,
    what: &str,
    timeout: Duration,
    waiter: impl std::future::Future<Output = Result<T, E>>,
) -> Result<(), ProviderError> {
    crate::engine::events::status(format!("waiting for {what}"));
    waiter
        .await
        .map(|_| ())
        .map_err(|e| waiter_err(op, what, timeout.as_secs(), e))
}

/// Maps a waiter failure to a [`ProviderError`].
fn waiter_err<E: std::fmt::Display>(op: &str, what: &str, secs: u64, e: E) -> ProviderError {
    let msg = e.to_string();
    if msg.to_ascii_lowercase().contains("exceeded") || msg.to_ascii_lowercase().contains("timeout")
    {
        ProviderError::Timeout {
            op: op.into(),
            what: what.into(),
            secs,
        }
    } else {
        ProviderError::Api {
            op: op.into(),
            code: "WaiterFailure".into(),
            message: msg,
            hint: None,
        }
    }
}
