//! Lambda functions and resource-based permissions.

use async_trait::async_trait;
use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Architecture, Environment, FunctionCode, PackageType, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Clients, Tags, api, none_if_missing, obj, ok_if_missing, split_id, wait_for};
use crate::engine::{Input, Resource};
use crate::error::ProviderError;
use crate::providers::{Observed, Provider, props, to_value};

/// Kind name of [`Function`].
pub const FUNCTION_KIND: &str = "aws:lambda:Function";
/// Kind name of [`Permission`].
pub const PERMISSION_KIND: &str = "aws:lambda:Permission";

const WAIT: Duration = Duration::from_secs(300);

/// Where the function's code comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// A zip file on disk; `sha256` is its base64 SHA-256 (what Lambda reports as
    /// `CodeSha256`), computed when declaring so the plan sees code changes.
    Zip {
        /// Path of the zip.
        path: String,
        /// Base64 SHA-256 of the file.
        sha256: String,
    },
    /// A zip uploaded to S3 first (packages over [`DIRECT_UPLOAD_MAX`] cannot go in
    /// the request); `sha256` as for `Zip`.
    S3 {
        /// Bucket.
        bucket: Input<String>,
        /// Key (content-addressed).
        key: Input<String>,
        /// Base64 SHA-256 of the zip.
        sha256: String,
    },
    /// A container image URI (e.g. in ECR), `<repository>@sha256:…` when the stack
    /// builds it.
    Image {
        /// Image URI.
        uri: Input<String>,
    },
}

/// The largest zip Lambda takes in the request itself (50 MB); larger ones go
/// through S3.
pub const DIRECT_UPLOAD_MAX: u64 = 50 * 1024 * 1024;

/// What the stack needs to know about a zip package.
#[derive(Debug, Clone, PartialEq)]
pub struct ZipFacts {
    /// Size in bytes.
    pub size: u64,
    /// Base64 SHA-256 (Lambda's `CodeSha256`).
    pub sha256_b64: String,
    /// Hex SHA-256 (the content-addressed S3 key).
    pub sha256_hex: String,
}

impl ZipFacts {
    /// Reads and hashes the zip at `path`. Errors name the path.
    pub fn of(path: &str) -> Result<ZipFacts, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("lambda zip `{path}`: {e}"))?;
        if !bytes.starts_with(b"PK") {
            return Err(format!("lambda zip `{path}` is not a zip file"));
        }
        let h = Sha256::digest(&bytes);
        Ok(ZipFacts {
            size: bytes.len() as u64,
            sha256_b64: b64(&h),
            sha256_hex: hex::encode(h),
        })
    }
    /// Whether the zip must be uploaded through S3.
    pub fn needs_s3(&self) -> bool {
        self.size > DIRECT_UPLOAD_MAX
    }
    /// The content-addressed S3 key.
    pub fn s3_key(&self) -> String {
        format!("lambda/{}.zip", self.sha256_hex)
    }
}

impl Code {
    /// Declares a zip package, hashing it now. Errors name the path.
    pub fn zip(path: &str) -> Result<Code, String> {
        let f = ZipFacts::of(path)?;
        Ok(Code::Zip {
            path: path.into(),
            sha256: f.sha256_b64,
        })
    }
    fn package_type(&self) -> &'static str {
        match self {
            Code::Zip { .. } | Code::S3 { .. } => "Zip",
            Code::Image { .. } => "Image",
        }
    }
    /// The same kind of code with the observed hash (`CodeSha256`), for zip packages.
    fn observed_zip(&self, sha256: String) -> Code {
        match self {
            Code::S3 { bucket, key, .. } => Code::S3 {
                bucket: bucket.clone(),
                key: key.clone(),
                sha256,
            },
            // The path is local knowledge: keep the declared one, compare the hash.
            Code::Zip { path, .. } => Code::Zip {
                path: path.clone(),
                sha256,
            },
            Code::Image { .. } => Code::Zip {
                path: String::new(),
                sha256,
            },
        }
    }
    /// The code as the CreateFunction request wants it.
    fn function_code(&self) -> Result<FunctionCode, ProviderError> {
        let b = FunctionCode::builder();
        Ok(match self {
            Code::Zip { path, .. } => b.zip_file(read_zip(path)?),
            Code::S3 { bucket, key, .. } => b.s3_bucket(bucket.as_str()).s3_key(key.as_str()),
            Code::Image { uri } => b.image_uri(uri.as_str()),
        }
        .build())
    }
}

/// Standard base64 with padding.
pub fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(T[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A Lambda function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Function {
    /// Function name (forces replacement).
    pub name: String,
    /// `Zip` or `Image` (forces replacement).
    pub package_type: String,
    /// Execution role ARN.
    pub role: Input<String>,
    /// Code.
    pub code: Code,
    /// Runtime for zip packages (e.g. `provided.al2023`).
    #[serde(default)]
    pub runtime: Option<String>,
    /// Handler for zip packages.
    #[serde(default)]
    pub handler: Option<String>,
    /// Memory in MB (128-10240).
    pub memory_mb: i32,
    /// Timeout in seconds (1-900).
    pub timeout_s: i32,
    /// `x86_64` or `arm64`.
    pub architecture: String,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Function {
    /// A custom-runtime (`provided.al2023`, handler `bootstrap`) or image function.
    pub fn new(name: impl Into<String>, role: impl Into<Input<String>>, code: Code) -> Self {
        let zip = matches!(code, Code::Zip { .. });
        Function {
            name: name.into(),
            package_type: code.package_type().into(),
            role: role.into(),
            runtime: zip.then(|| "provided.al2023".into()),
            handler: zip.then(|| "bootstrap".into()),
            code,
            memory_mb: 1024,
            timeout_s: 30,
            architecture: "x86_64".into(),
            env: BTreeMap::new(),
            tags: Tags::new(),
        }
    }
}

impl Resource for Function {
    const KIND: &'static str = FUNCTION_KIND;
    fn validate(&self) -> Vec<String> {
        let mut e = vec![];
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.name.is_empty() || self.name.len() > 64 || !self.name.chars().all(ok) {
            e.push(format!(
                "name `{}` must be 1-64 chars of [A-Za-z0-9_-]",
                self.name
            ));
        }
        if !(128..=10240).contains(&self.memory_mb) {
            e.push(format!(
                "memory_mb {} must be between 128 and 10240",
                self.memory_mb
            ));
        }
        if !(1..=900).contains(&self.timeout_s) {
            e.push(format!(
                "timeout_s {} must be between 1 and 900",
                self.timeout_s
            ));
        }
        if !["x86_64", "arm64"].contains(&self.architecture.as_str()) {
            e.push(format!(
                "architecture `{}` must be x86_64 or arm64",
                self.architecture
            ));
        }
        if self.package_type != self.code.package_type() {
            e.push(format!(
                "package_type `{}` does not match the code",
                self.package_type
            ));
        }
        for k in self.env.keys() {
            if k.is_empty()
                || !k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                e.push(format!("environment variable name `{k}` is invalid"));
            }
        }
        e
    }
}

/// Provider for [`Function`].
pub struct FunctionProvider(pub Arc<Clients>);

fn fn_outputs(c: &Clients, arn: &str, name: &str) -> Map<String, Value> {
    let invoke = format!(
        "arn:aws:apigateway:{}:lambda:path/2015-03-31/functions/{arn}/invocations",
        c.region
    );
    obj(json!({ "arn": arn, "name": name, "invoke_arn": invoke }))
}

fn read_zip(path: &str) -> Result<Blob, ProviderError> {
    std::fs::read(path)
        .map(Blob::new)
        .map_err(|source| ProviderError::Artifact {
            path: path.into(),
            source,
        })
}

fn role_not_ready(e: &ProviderError) -> bool {
    // IAM is eventually consistent: Lambda rejects a just-created role for a few seconds.
    matches!(e, ProviderError::Api { code, message, .. }
        if code == "InvalidParameterValueException" && message.contains("role"))
}

impl FunctionProvider {
    async fn wait_updated(&self, name: &str) -> Result<(), ProviderError> {
        wait_for(
            "lambda:GetFunction",
            "LastUpdateStatus=Successful",
            WAIT,
            self.0
                .lambda
                .wait_until_function_updated_v2()
                .function_name(name)
                .wait(WAIT),
        )
        .await
    }
}

#[async_trait]
impl Provider for FunctionProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["name", "package_type"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Function = props(desired)?;
        let name = id.unwrap_or(&d.name);
        let r = self
            .0
            .lambda
            .get_function()
            .function_name(name)
            .send()
            .await;
        let Some(r) = none_if_missing(r.map_err(|e| api("lambda:GetFunction", e)))? else {
            return Ok(None);
        };
        let Some(c) = r.configuration() else {
            return Ok(None);
        };
        let package_type = c.package_type().map_or("Zip", |p| p.as_str()).to_string();
        let code = if package_type == "Image" {
            let uri = r.code().and_then(|c| c.image_uri()).unwrap_or_default();
            Code::Image {
                uri: Input::Value(uri.to_string()),
            }
        } else {
            d.code
                .observed_zip(c.code_sha256().unwrap_or_default().to_string())
        };
        let obs = Function {
            name: c.function_name().unwrap_or(name).to_string(),
            package_type,
            role: Input::Value(c.role().unwrap_or_default().to_string()),
            code,
            runtime: c.runtime().map(|r| r.as_str().to_string()),
            handler: c.handler().map(str::to_string),
            memory_mb: c.memory_size().unwrap_or(128),
            timeout_s: c.timeout().unwrap_or(3),
            architecture: c
                .architectures()
                .first()
                .map_or("x86_64", |a| a.as_str())
                .to_string(),
            env: c
                .environment()
                .and_then(|e| e.variables())
                .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            tags: super::user_tags(r.tags().cloned().unwrap_or_default()),
        };
        let arn = c.function_arn().unwrap_or_default();
        Ok(Some(Observed {
            id: obs.name.clone(),
            props: to_value(&obs)?,
            outputs: fn_outputs(&self.0, arn, &obs.name),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Function = props(desired)?;
        let code = d.code.function_code()?;
        let env = Environment::builder()
            .set_variables(Some(d.env.clone().into_iter().collect()))
            .build();
        let r = super::retry_on(Duration::from_secs(60), role_not_ready, || async {
            self.0
                .lambda
                .create_function()
                .function_name(&d.name)
                .role(d.role.as_str())
                .package_type(PackageType::from(d.package_type.as_str()))
                .code(code.clone())
                .set_runtime(d.runtime.as_deref().map(Runtime::from))
                .set_handler(d.handler.clone())
                .memory_size(d.memory_mb)
                .timeout(d.timeout_s)
                .architectures(Architecture::from(d.architecture.as_str()))
                .environment(env.clone())
                .set_tags(Some(d.tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(|e| api("lambda:CreateFunction", e))
        })
        .await?;
        wait_for(
            "lambda:GetFunction",
            "State=Active",
            WAIT,
            self.0
                .lambda
                .wait_until_function_active_v2()
                .function_name(&d.name)
                .wait(WAIT),
        )
        .await?;
        let arn = r.function_arn().unwrap_or_default();
        Ok(Observed {
            id: d.name.clone(),
            props: desired.clone(),
            outputs: fn_outputs(&self.0, arn, &d.name),
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: Function = props(observed)?;
        let d: Function = props(desired)?;
        let config_changed = o.role != d.role
            || o.memory_mb != d.memory_mb
            || o.timeout_s != d.timeout_s
            || o.env != d.env
            || o.runtime != d.runtime
            || o.handler != d.handler;
        if config_changed {
            let env = Environment::builder()
                .set_variables(Some(d.env.clone().into_iter().collect()))
                .build();
            super::retry_on(Duration::from_secs(60), role_not_ready, || async {
                self.0
                    .lambda
                    .update_function_configuration()
                    .function_name(id)
                    .role(d.role.as_str())
                    .memory_size(d.memory_mb)
                    .timeout(d.timeout_s)
                    .environment(env.clone())
                    .set_runtime(d.runtime.as_deref().map(Runtime::from))
                    .set_handler(d.handler.clone())
                    .send()
                    .await
                    .map_err(|e| api("lambda:UpdateFunctionConfiguration", e))
            })
            .await?;
            self.wait_updated(id).await?;
        }
        if o.code != d.code || o.architecture != d.architecture {
            let mut req = self
                .0
                .lambda
                .update_function_code()
                .function_name(id)
                .architectures(Architecture::from(d.architecture.as_str()));
            req = match &d.code {
                Code::Zip { path, .. } => req.zip_file(read_zip(path)?),
                Code::S3 { bucket, key, .. } => req.s3_bucket(bucket.as_str()).s3_key(key.as_str()),
                Code::Image { uri } => req.image_uri(uri.as_str()),
            };
            req.send()
                .await
                .map_err(|e| api("lambda:UpdateFunctionCode", e))?;
            self.wait_updated(id).await?;
        }
        let now = self.read(Some(id), desired, None).await?;
        let outputs = now.map(|n| n.outputs).unwrap_or_default();
        let arn = super::arn_output(&outputs);
        let lambda = &self.0.lambda;
        let set = |t: Tags| async {
            let r = lambda
                .tag_resource()
                .resource(&arn)
                .set_tags(Some(t.into_iter().collect()));
            r.send()
                .await
                .map(|_| ())
                .map_err(|e| api("lambda:TagResource", e))
        };
        let rm = |k: Vec<String>| async {
            let r = lambda.untag_resource().resource(&arn).set_tag_keys(Some(k));
            r.send()
                .await
                .map(|_| ())
                .map_err(|e| api("lambda:UntagResource", e))
        };
        super::retag(&o.tags, &d.tags, set, rm).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs,
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let r = self
            .0
            .lambda
            .delete_function()
            .function_name(id)
            .send()
            .await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("lambda:DeleteFunction", e)))
    }
}

/// A statement in a function's resource policy (e.g. letting API Gateway invoke it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Permission {
    /// Function name.
    pub function: Input<String>,
    /// Statement id.
    pub statement_id: String,
    /// Action, e.g. `lambda:InvokeFunction`.
    pub action: String,
    /// Service principal, e.g. `apigateway.amazonaws.com`.
    pub principal: String,
    /// Source ARN condition.
    pub source_arn: Input<String>,
}

impl Resource for Permission {
    const KIND: &'static str = PERMISSION_KIND;
    const TAGGABLE: bool = false;
    fn validate(&self) -> Vec<String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.statement_id.is_empty() || !self.statement_id.chars().all(ok) {
            vec![format!(
                "statement_id `{}` must be non-empty [A-Za-z0-9_-]",
                self.statement_id
            )]
        } else {
            vec![]
        }
    }
}

/// Provider for [`Permission`]; its id is `function|statement_id`.
pub struct PermissionProvider(pub Arc<Clients>);

#[async_trait]
impl Provider for PermissionProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &[
            "function",
            "statement_id",
            "action",
            "principal",
            "source_arn",
        ]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Permission = props(desired)?;
        let key = format!("{}|{}", d.function.as_str(), d.statement_id);
        let (function, sid) = id.unwrap_or(&key).split_once('|').unwrap_or((&key, ""));
        let r = self
            .0
            .lambda
            .get_policy()
            .function_name(function)
            .send()
            .await;
        let Some(r) = none_if_missing(r.map_err(|e| api("lambda:GetPolicy", e)))? else {
            return Ok(None);
        };
        let policy: Value = serde_json::from_str(r.policy().unwrap_or("{}")).unwrap_or(Value::Null);
        let stmts = policy
            .get("Statement")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(s) = stmts
            .iter()
            .find(|s| s.get("Sid").and_then(Value::as_str) == Some(sid))
        else {
            return Ok(None);
        };
        let principal = s
            .pointer("/Principal/Service")
            .or_else(|| s.get("Principal"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let source = s
            .pointer("/Condition/ArnLike/AWS:SourceArn")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let obs = json!({
            "function": function,
            "statement_id": sid,
            "action": s.get("Action").and_then(Value::as_str).unwrap_or_default(),
            "principal": principal,
            "source_arn": source,
        });
        Ok(Some(Observed {
            id: format!("{function}|{sid}"),
            props: obs,
            outputs: Map::new(),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Permission = props(desired)?;
        let r = self
            .0
            .lambda
            .add_permission()
            .function_name(d.function.as_str())
            .statement_id(&d.statement_id)
            .action(&d.action)
            .principal(&d.principal)
            .source_arn(d.source_arn.as_str())
            .send()
            .await;
        r.map_err(|e| api("lambda:AddPermission", e))?;
        Ok(Observed {
            id: format!("{}|{}", d.function.as_str(), d.statement_id),
            props: desired.clone(),
            outputs: Map::new(),
        })
    }

    async fn update(
        &self,
        id: &str,
        _observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: Map::new(),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let (function, sid) = split_id(id);
        let r = self
            .0
            .lambda
            .remove_permission()
            .function_name(function)
            .statement_id(sid)
            .send()
            .await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("lambda:RemovePermission", e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn invalid_memory_is_rejected() {
        let mut f = Function::new(
            "f",
            "arn:aws:iam::1:role/r",
            Code::Image { uri: "x".into() },
        );
        f.memory_mb = 100_000;
        assert!(f.validate().iter().any(|e| e.contains("memory_mb 100000")));
    }
}
