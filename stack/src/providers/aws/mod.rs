//! AWS providers over the AWS SDK for Rust. The same code serves real AWS and a local
//! endpoint (moto); only the SDK configuration differs (see [`AwsTarget`]).

pub mod apigw;
pub mod ec2;
pub mod ecr;
pub mod eks;
pub mod iam;
pub mod lambda;
pub mod logs;
pub mod request_log;
pub mod s3;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use super::Outputs;
use super::{Applied, Lookup, Registry, ResourceProvider};
use crate::engine::Input;
use crate::error::{ProviderError, hint_for};

/// What every resource file imports.
pub(crate) mod prelude {
    pub use super::{
        AwsResult, Clients, Missing, Tagging, Tags, join_id, obj, split_id, sync_tags,
    };
    pub use crate::engine::{Input, Resource};
    pub use crate::error::ProviderError;
    pub use crate::providers::{
        Applied, Charset, Checks, Created, Found, Lookup, Outputs, Read, ResourceProvider,
    };
    pub use async_trait::async_trait;
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::json;
    pub use std::sync::Arc;
}

/// The partition of `region`, the first field of its ARNs: `aws-cn` for China,
/// `aws-us-gov` for GovCloud, `aws` elsewhere (AWS General Reference, "Amazon Resource
/// Names": <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html>).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The DNS suffix of `region`'s endpoints: `amazonaws.com.cn` in China.
pub fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

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
            // The CLI sets its --wait-timeout-secs here; 30 min is EKS's slowest step.
            wait_timeout: Duration::from_secs(1800),
            account: Arc::default(),
            sdk: conf,
        }
    }

    /// The same clients, each also writing its requests to `log`.
    pub fn recording(self, log: &request_log::RequestLog) -> Clients {
        macro_rules! with_log {
            ($client:expr, $sdk:ident) => {
                $sdk::Client::from_conf(
                    $client
                        .config()
                        .to_builder()
                        .interceptor(log.clone())
                        .build(),
                )
            };
        }
        Clients {
            ecr: with_log!(self.ecr, aws_sdk_ecr),
            iam: with_log!(self.iam, aws_sdk_iam),
            lambda: with_log!(self.lambda, aws_sdk_lambda),
            apigw: with_log!(self.apigw, aws_sdk_apigatewayv2),
            eks: with_log!(self.eks, aws_sdk_eks),
            logs: with_log!(self.logs, aws_sdk_cloudwatchlogs),
            ec2: with_log!(self.ec2, aws_sdk_ec2),
            sts: with_log!(self.sts, aws_sdk_sts),
            s3: with_log!(self.s3, aws_sdk_s3),
            ..self
        }
    }

    /// The partition of the clients' region (see [`partition`]).
    pub fn partition(&self) -> &'static str {
        partition(&self.region)
    }

    /// The account id of the caller (asked once per process).
    pub async fn account_id(&self) -> Result<String, ProviderError> {
        let id = self
            .account
            .get_or_try_init(|| async {
                let r = self.sts.get_caller_identity().send().await;
                let r = r.aws("sts:GetCallerIdentity")?;
                Ok::<_, ProviderError>(r.account.unwrap_or_default())
            })
            .await?;
        Ok(id.clone())
    }
}

/// Registers every AWS resource kind.
pub fn register(reg: &mut Registry, c: &Arc<Clients>) {
    reg.add(ecr::RepositoryProvider(c.clone()));
    reg.add(iam::RoleProvider(c.clone()));
    reg.add(iam::AttachmentProvider(c.clone()));
    reg.add(logs::LogGroupProvider(c.clone()));
    reg.add(lambda::FunctionProvider(c.clone()));
    reg.add(lambda::PermissionProvider(c.clone()));
    reg.add(apigw::ApiProvider(c.clone()));
    reg.add(apigw::IntegrationProvider(c.clone()));
    reg.add(apigw::RouteProvider(c.clone()));
    reg.add(apigw::StageProvider(c.clone()));
    reg.add(ec2::VpcProvider(c.clone()));
    reg.add(ec2::SubnetProvider(c.clone()));
    reg.add(ec2::InternetGatewayProvider(c.clone()));
    reg.add(ec2::RouteTableProvider(c.clone()));
    reg.add(eks::ClusterProvider(c.clone()));
    reg.add(eks::NodeGroupProvider(c.clone()));
    reg.add(s3::BucketProvider(c.clone()));
    reg.add(s3::ObjectProvider(c.clone()));
    // Real EKS add-ons; the local target replaces this provider when its endpoint has
    // no add-on API (see `eks::AddonProvider`).
    reg.add(eks::AddonProvider::Api(c.clone()));
}

/// Converts an SDK error into a [`ProviderError`] with the AWS code and a hint.
pub fn api<E, R>(op: &str, e: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, message) = match &e {
        // Credentials are loaded when the request is dispatched, so an expired SSO
        // session or a missing profile fails as a dispatch failure: not the endpoint's
        // fault, and the hint must say so.
        SdkError::DispatchFailure(_) if is_credentials_failure(&e) => {
            ("CredentialsError".to_string(), chain(&e))
        }
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

/// Whether any cause in the chain is the credential provider's (its messages say
/// "loading credentials"; an SSO provider's say "SSO token").
fn is_credentials_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if text.contains("loading credentials") || text.contains("SSO token") {
            return true;
        }
        cause = c.source();
    }
    false
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

/// `.aws("svc:Op")` on an SDK result: its error as a [`ProviderError`] (see [`api`]).
pub trait AwsResult<T> {
    /// Maps the SDK error of operation `op` (e.g. `lambda:DeleteFunction`).
    fn aws(self, op: &str) -> Result<T, ProviderError>;
}

impl<T, E, R> AwsResult<T> for Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn aws(self, op: &str) -> Result<T, ProviderError> {
        self.map_err(|e| api(op, e))
    }
}

/// Not-found handling on a provider result.
pub trait Missing<T> {
    /// `Ok(None)` for a not-found error (a read of something absent).
    fn none_if_missing(self) -> Result<Option<T>, ProviderError>;
    /// `Ok(())` for a not-found error (deleting something already gone); the value
    /// is dropped.
    fn missing_ok(self) -> Result<(), ProviderError>;
}

impl<T> Missing<T> for Result<T, ProviderError> {
    fn none_if_missing(self) -> Result<Option<T>, ProviderError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn missing_ok(self) -> Result<(), ProviderError> {
        self.none_if_missing().map(|_| ())
    }
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

/// A service's tag API. `arn` is whatever the service tags by (an ARN; an EC2 id; an
/// IAM role name; an S3 bucket name). Each service has one implementation, in its
/// module.
#[async_trait]
pub trait Tagging: Sync {
    /// The resource's user tags (AWS-reserved `aws:*` ones left out).
    async fn tags(&self, arn: &str) -> Result<Tags, ProviderError>;
    /// Adds or overwrites `tags`.
    async fn tag(&self, arn: &str, tags: Tags) -> Result<(), ProviderError>;
    /// Removes the tags with these keys.
    async fn untag(&self, arn: &str, keys: Vec<String>) -> Result<(), ProviderError>;
    /// Brings the tags from `old` to `new`: [`Tagging::tag`] the added and changed
    /// ones, then [`Tagging::untag`] the removed keys, each call made only when it has
    /// something to do. A service that can only replace the whole set overrides this.
    async fn sync(&self, arn: &str, old: &Tags, new: &Tags) -> Result<(), ProviderError> {
        let (add, remove) = tag_delta(old, new);
        if !add.is_empty() {
            self.tag(arn, add).await?;
        }
        if !remove.is_empty() {
            self.untag(arn, remove).await?;
        }
        Ok(())
    }
}

/// The [`Tagging`] impl of a service: its list, tag and untag calls (`$list`, `$tag`,
/// `$untag`, each with its operation name) on a resource named by `$name` (the request
/// field), `observed` turning the list call's answer `$r` into `(key, value)` pairs and
/// `sdk` turning [`Tags`] `$t` into what the tag call's `set_tags` takes. Every
/// service's impl is one of these, so all list, tag and untag alike.
macro_rules! tagging {
    (
        $client:ty,
        $svc:literal,
        $name:ident,
        $list:ident => $list_op:literal,
        observed: |$r:ident| $observed:expr,
        $tag:ident => $tag_op:literal,
        sdk: |$t:ident| $sdk:expr,
        $untag:ident => $untag_op:literal
    ) => {
        #[async_trait::async_trait]
        impl $crate::providers::aws::Tagging for $client {
            async fn tags(
                &self,
                name: &str,
            ) -> Result<$crate::providers::aws::Tags, $crate::error::ProviderError> {
                let r = self.$list().$name(name).send().await;
                let op = concat!($svc, ":", $list_op);
                let $r = $crate::providers::aws::AwsResult::aws(r, op)?;
                Ok($crate::providers::aws::user_tags($observed))
            }
            async fn tag(
                &self,
                name: &str,
                $t: $crate::providers::aws::Tags,
            ) -> Result<(), $crate::error::ProviderError> {
                let r = self.$tag().$name(name).set_tags(Some($sdk));
                let op = concat!($svc, ":", $tag_op);
                $crate::providers::aws::AwsResult::aws(r.send().await, op).map(|_| ())
            }
            async fn untag(
                &self,
                name: &str,
                keys: Vec<String>,
            ) -> Result<(), $crate::error::ProviderError> {
                let r = self.$untag().$name(name).set_tag_keys(Some(keys));
                let op = concat!($svc, ":", $untag_op);
                $crate::providers::aws::AwsResult::aws(r.send().await, op).map(|_| ())
            }
        }
    };
}
pub(crate) use tagging;

/// The [`Tagging`] impl of a service whose tag API is `TagResource` with a map and
/// `UntagResource` with keys on a resource named by `$arn` (the request field), and a
/// list call `$list` answering with a map: API Gateway, EKS, Lambda, CloudWatch Logs.
macro_rules! map_tagging {
    ($client:ty, $svc:literal, $arn:ident, $list:ident, $list_op:literal) => {
        $crate::providers::aws::tagging!(
            $client,
            $svc,
            $arn,
            $list => $list_op,
            observed: |r| r.tags().cloned().unwrap_or_default(),
            tag_resource => "TagResource",
            sdk: |tags| tags.into_iter().collect(),
            untag_resource => "UntagResource"
        );
    };
}
pub(crate) use map_tagging;

/// The [`Tagging`] impl of a service whose tags are a list of `Tag { key, value }`
/// (`$sdk_tags`, a `fn(&Tags) -> Result<Vec<Tag>, ProviderError>`, builds it) on a
/// resource named by `$name`: ECR (repositories, by ARN) and IAM (roles, by name).
macro_rules! list_tagging {
    (
        $client:ty,
        $svc:literal,
        $name:ident,
        $sdk_tags:path,
        $list:ident => $list_op:literal,
        $tag:ident => $tag_op:literal,
        $untag:ident => $untag_op:literal
    ) => {
        $crate::providers::aws::tagging!(
            $client,
            $svc,
            $name,
            $list => $list_op,
            observed: |r| r.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())),
            $tag => $tag_op,
            sdk: |tags| $sdk_tags(&tags)?,
            $untag => $untag_op
        );
    };
}
pub(crate) use list_tagging;

/// Brings the tags of `arn` from `old` to `new` through the service's [`Tagging`].
pub async fn sync_tags(
    t: &impl Tagging,
    arn: &str,
    old: &Tags,
    new: &Tags,
) -> Result<(), ProviderError> {
    t.sync(arn, old, new).await
}

/// The end of an update for services that tag by the ARN a read reports: reads the
/// resource back, syncs its tags from `old` to `new` by the `arn` output, and reports
/// that read's outputs (none, and an empty ARN, when it finds nothing).
pub async fn read_back_and_tag<P: ResourceProvider>(
    p: &P,
    t: &impl Tagging,
    id: &str,
    desired: &P::Resource,
    old: &Tags,
    new: &Tags,
) -> Result<Applied, ProviderError> {
    let now = p.read(Lookup::back(id, desired)).await?;
    let outputs = now.map(|n| n.outputs).unwrap_or_default();
    sync_tags(t, &arn_output(&outputs), old, new).await?;
    Ok(Applied::Outputs(outputs))
}

/// The `arn` output of a resource just read (empty when the read found nothing).
pub fn arn_output(outputs: &serde_json::Map<String, serde_json::Value>) -> String {
    outputs
        .get("arn")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Orders `observed` like `desired` when both hold the same set (the API does not keep
/// the declared order).
pub fn same_order(desired: &[Input<String>], observed: Vec<String>) -> Vec<Input<String>> {
    let mut a: Vec<&str> = desired.iter().map(Input::as_str).collect();
    let mut b: Vec<&str> = observed.iter().map(String::as_str).collect();
    a.sort_unstable();
    b.sort_unstable();
    if a == b {
        desired.to_vec()
    } else {
        observed.into_iter().map(Input::Value).collect()
    }
}

/// The strings of resolved inputs.
pub fn strs(v: &[Input<String>]) -> Vec<String> {
    v.iter().map(|s| s.as_str().to_string()).collect()
}

/// Retries `f` while it fails with an error `retryable` accepts: exponential backoff
/// from 250 ms, doubling up to 5 s a wait, until `max` has been slept in all. Used for
/// eventual consistency (a new IAM role not yet assumable by Lambda), never as a blind
/// sleep. The SDK's own retry mode handles throttling and transient errors below this.
pub async fn retry_on<T, F, Fut>(
    max: Duration,
    retryable: impl Fn(&ProviderError) -> bool,
    f: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    use backon::{ExponentialBuilder, Retryable};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_total_delay(Some(max))
        .without_max_times();
    f.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| retryable(e))
        .await
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

/// The composite resource id `a|b` that [`split_id`] takes apart.
pub fn join_id(a: &str, b: &str) -> String {
    format!("{a}|{b}")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn throttled() -> ProviderError {
        ProviderError::Api {
            op: "iam:GetRole".into(),
            code: "Throttling".into(),
            message: "slow down".into(),
            hint: None,
        }
    }

    /// How many calls `retry_on` makes of a call that always fails (`retryable`: whether
    /// it may retry the failure) before it gives up, which it must.
    async fn calls_until_given_up(max: Duration, retryable: bool) -> u32 {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry_on(
            max,
            |_| retryable,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(throttled())
            },
        )
        .await;
        assert!(r.is_err());
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn retry_on_retries_only_what_it_is_told_and_only_for_so_long() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let r = retry_on(
            Duration::from_secs(5),
            |e| e.code() == Some("Throttling"),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(throttled()),
                    n => Ok(n),
                }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 2, "third call succeeds");
        // 250 ms then 500 ms of backoff.
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "{:?}",
            started.elapsed()
        );

        let calls = calls_until_given_up(Duration::from_secs(5), false).await;
        assert_eq!(calls, 1, "a non-retryable error is not retried");

        let started = std::time::Instant::now();
        let calls = calls_until_given_up(Duration::from_millis(600), true).await;
        assert!((2..=3).contains(&calls));
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "gave up in time"
        );
    }

    /// A tag API that records its calls.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait]
    impl Tagging for Recorder {
        async fn tags(&self, _arn: &str) -> Result<Tags, ProviderError> {
            Ok(Tags::new())
        }
        async fn tag(&self, arn: &str, tags: Tags) -> Result<(), ProviderError> {
            self.0.lock().unwrap().push(format!("tag {arn} {tags:?}"));
            Ok(())
        }
        async fn untag(&self, arn: &str, keys: Vec<String>) -> Result<(), ProviderError> {
            self.0.lock().unwrap().push(format!("untag {arn} {keys:?}"));
            Ok(())
        }
    }

    fn tags(kv: &[(&str, &str)]) -> Tags {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn sync_tags_adds_changes_and_removes() {
        let t = Recorder::default();
        let old = tags(&[("keep", "1"), ("change", "a"), ("drop", "x")]);
        let new = tags(&[("keep", "1"), ("change", "b"), ("add", "y")]);
        sync_tags(&t, "arn:1", &old, &new).await.unwrap();
        assert_eq!(
            *t.0.lock().unwrap(),
            [
                r#"tag arn:1 {"add": "y", "change": "b"}"#,
                r#"untag arn:1 ["drop"]"#,
            ]
        );
    }

    #[tokio::test]
    async fn sync_tags_calls_only_what_has_something_to_do() {
        let t = Recorder::default();
        let same = tags(&[("a", "1")]);
        sync_tags(&t, "arn", &same, &same).await.unwrap();
        assert!(t.0.lock().unwrap().is_empty());
        sync_tags(&t, "arn", &same, &tags(&[("a", "1"), ("b", "2")]))
            .await
            .unwrap();
        sync_tags(&t, "arn", &same, &Tags::new()).await.unwrap();
        assert_eq!(
            *t.0.lock().unwrap(),
            [r#"tag arn {"b": "2"}"#, r#"untag arn ["a"]"#]
        );
    }

    #[test]
    fn missing_maps_not_found_only() {
        let gone = || -> Result<u8, ProviderError> {
            Err(ProviderError::Api {
                op: "x:Get".into(),
                code: "ResourceNotFoundException".into(),
                message: "no".into(),
                hint: None,
            })
        };
        assert_eq!(gone().none_if_missing().unwrap(), None);
        assert!(gone().missing_ok().is_ok());
        assert_eq!(
            Ok::<u8, ProviderError>(3).none_if_missing().unwrap(),
            Some(3)
        );
        let other: Result<u8, ProviderError> = Err(ProviderError::Props("bad".into()));
        assert!(other.missing_ok().is_err());
    }

    #[test]
    fn same_order_keeps_the_declared_order_of_the_same_set() {
        let d: Vec<Input<String>> = vec!["b".into(), "a".into()];
        assert_eq!(same_order(&d, vec!["a".into(), "b".into()]), d);
        assert_eq!(
            same_order(&d, vec!["c".into()]),
            vec![Input::Value("c".to_string())]
        );
    }

    /// Registration checks every provider's replace paths against its resource type
    /// (it panics on a path that names no field).
    #[tokio::test]
    async fn every_aws_provider_registers_with_valid_replace_paths() {
        let target = AwsTarget::Local {
            endpoint: "http://127.0.0.1:9".into(),
        };
        let c = Arc::new(Clients::new(&target, "us-east-1").await);
        let mut reg = Registry::default();
        register(&mut reg, &c);
        assert_eq!(reg.kinds().count(), 19);
        for kind in reg.kinds() {
            let p = reg.get(kind).unwrap();
            assert!(!p.replace_fields().is_empty(), "{kind}");
        }
    }

    /// Each kind's name, whether the engine tags it and what forces its replacement,
    /// as its resource type declares them (`#[derive(Resource)]`) and its provider
    /// serves them: pinned, since states and plans depend on them.
    #[test]
    fn every_aws_kind_keeps_its_name_tagging_and_replace_paths() {
        type Decl = (&'static str, bool, &'static [&'static str]);
        fn decl<P: ResourceProvider>() -> Decl {
            use crate::engine::Resource;
            let (kind, taggable) = (P::Resource::KIND, P::Resource::TAGGABLE);
            (kind, taggable, P::REPLACE_PATHS)
        }
        let declared = [
            decl::<apigw::ApiProvider>(),
            decl::<apigw::IntegrationProvider>(),
            decl::<apigw::RouteProvider>(),
            decl::<apigw::StageProvider>(),
            decl::<ec2::InternetGatewayProvider>(),
            decl::<ec2::RouteTableProvider>(),
            decl::<ec2::SubnetProvider>(),
            decl::<ec2::VpcProvider>(),
            decl::<ecr::RepositoryProvider>(),
            decl::<eks::AddonProvider>(),
            decl::<eks::ClusterProvider>(),
            decl::<eks::NodeGroupProvider>(),
            decl::<iam::AttachmentProvider>(),
            decl::<iam::RoleProvider>(),
            decl::<lambda::FunctionProvider>(),
            decl::<lambda::PermissionProvider>(),
            decl::<logs::LogGroupProvider>(),
            decl::<s3::BucketProvider>(),
            decl::<s3::ObjectProvider>(),
        ];
        let want: [Decl; 19] = [
            ("aws:apigatewayv2:Api", true, &["protocol_type"]),
            (
                "aws:apigatewayv2:Integration",
                false,
                &["api_id", "integration_type"],
            ),
            ("aws:apigatewayv2:Route", false, &["api_id"]),
            ("aws:apigatewayv2:Stage", true, &["api_id", "name"]),
            ("aws:ec2:InternetGateway", true, &["vpc_id"]),
            ("aws:ec2:RouteTable", true, &["vpc_id"]),
            (
                "aws:ec2:Subnet",
                true,
                &["vpc_id", "cidr_block", "availability_zone"],
            ),
            ("aws:ec2:Vpc", true, &["cidr_block"]),
            ("aws:ecr:Repository", true, &["name"]),
            ("aws:eks:Addon", true, &["cluster", "name"]),
            ("aws:eks:Cluster", true, &["name", "role_arn", "subnet_ids"]),
            (
                "aws:eks:NodeGroup",
                true,
                &[
                    "cluster",
                    "name",
                    "node_role",
                    "subnet_ids",
                    "instance_types",
                ],
            ),
            (
                "aws:iam:RolePolicyAttachment",
                false,
                &["role", "policy_arn"],
            ),
            ("aws:iam:Role", true, &["name"]),
            ("aws:lambda:Function", true, &["name", "package_type"]),
            (
                "aws:lambda:Permission",
                false,
                &[
                    "function",
                    "statement_id",
                    "action",
                    "principal",
                    "source_arn",
                ],
            ),
            ("aws:logs:LogGroup", true, &["name"]),
            ("aws:s3:Bucket", true, &["name", "account_suffix"]),
            ("aws:s3:Object", false, &["bucket", "key"]),
        ];
        assert_eq!(declared, want);
    }
}
