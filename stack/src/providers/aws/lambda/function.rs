//! A Lambda function: zip (direct or through S3) or container image.

use crate::providers::aws::{prelude::*, read_back_and_tag, retry_on, user_tags, wait_for};
use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Architecture, Environment, FunctionCode, PackageType, Runtime};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

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

/// Standard base64 with padding (how Lambda writes `CodeSha256`).
pub fn b64(data: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data)
}

/// A Lambda function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:lambda:Function", checks = Self::checks)]
pub struct Function {
    /// Function name (forces replacement).
    #[resource(replace, chars(1..=64, Charset::WORD))]
    pub name: String,
    /// `Zip` or `Image` (forces replacement).
    #[resource(replace)]
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
    #[resource(within = 128..=10240)]
    pub memory_mb: i32,
    /// Timeout in seconds (1-900).
    #[resource(within = 1..=900)]
    pub timeout_s: i32,
    /// `x86_64` or `arm64`.
    #[resource(one_of("x86_64", "arm64"))]
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
    /// Runtime and handler go with every zip package, uploaded or in S3: AWS refuses
    /// a zip `CreateFunction` without them (moto does not).
    pub fn new(name: impl Into<String>, role: impl Into<Input<String>>, code: Code) -> Self {
        let zip = !matches!(code, Code::Image { .. });
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

impl Function {
    /// The package type matches the code; environment variable names.
    fn checks(&self, c: Checks) -> Checks {
        let package_type = &self.package_type;
        let c = c.require(package_type == self.code.package_type(), || {
            format!("package_type `{package_type}` does not match the code")
        });
        let env_name = |k: &str| {
            k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        self.env.keys().fold(c, |c, k| {
            c.require(env_name(k), || {
                format!("environment variable name `{k}` is invalid")
            })
        })
    }
}

/// Provider for [`Function`].
pub struct FunctionProvider(pub Arc<Clients>);

fn fn_outputs(c: &Clients, arn: &str, name: &str) -> Outputs {
    let invoke = format!(
        "arn:{}:apigateway:{}:lambda:path/2015-03-31/functions/{arn}/invocations",
        c.partition(),
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

fn environment(d: &Function) -> Environment {
    Environment::builder()
        .set_variables(Some(d.env.clone().into_iter().collect()))
        .build()
}

impl FunctionProvider {
    async fn wait_updated(&self, name: &str) -> Result<(), ProviderError> {
        let w = self.0.lambda.wait_until_function_updated_v2();
        let w = w.function_name(name).wait(WAIT);
        wait_for("lambda:GetFunction", "LastUpdateStatus=Successful", WAIT, w).await
    }

    async fn update_config(&self, id: &str, d: &Function) -> Result<(), ProviderError> {
        let env = environment(d);
        retry_on(Duration::from_secs(60), role_not_ready, || async {
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
                .aws("lambda:UpdateFunctionConfiguration")
        })
        .await?;
        self.wait_updated(id).await
    }

    async fn update_code(&self, id: &str, d: &Function) -> Result<(), ProviderError> {
        let arch = Architecture::from(d.architecture.as_str());
        let req = self.0.lambda.update_function_code().function_name(id);
        let req = req.architectures(arch);
        let req = match &d.code {
            Code::Zip { path, .. } => req.zip_file(read_zip(path)?),
            Code::S3 { bucket, key, .. } => req.s3_bucket(bucket.as_str()).s3_key(key.as_str()),
            Code::Image { uri } => req.image_uri(uri.as_str()),
        };
        req.send().await.aws("lambda:UpdateFunctionCode")?;
        self.wait_updated(id).await
    }
}

#[async_trait]
impl ResourceProvider for FunctionProvider {
    type Resource = Function;

    async fn read(&self, at: Lookup<'_, Function>) -> Found<Function> {
        let d = at.desired;
        let name = at.id_or(&d.name);
        let r = self
            .0
            .lambda
            .get_function()
            .function_name(name)
            .send()
            .await;
        let Some(r) = r.aws("lambda:GetFunction").none_if_missing()? else {
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
        let props = Function {
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
            tags: user_tags(r.tags().cloned().unwrap_or_default()),
        };
        let arn = c.function_arn().unwrap_or_default();
        Ok(Some(Read {
            id: props.name.clone(),
            outputs: fn_outputs(&self.0, arn, &props.name),
            props,
        }))
    }

    async fn create(&self, d: &Function) -> Result<Created, ProviderError> {
        let code = d.code.function_code()?;
        let env = environment(d);
        let r = retry_on(Duration::from_secs(60), role_not_ready, || async {
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
                .aws("lambda:CreateFunction")
        })
        .await?;
        let w = self.0.lambda.wait_until_function_active_v2();
        let w = w.function_name(&d.name).wait(WAIT);
        wait_for("lambda:GetFunction", "State=Active", WAIT, w).await?;
        let arn = r.function_arn().unwrap_or_default();
        Ok(Created::new(&d.name, fn_outputs(&self.0, arn, &d.name)))
    }

    async fn update(&self, id: &str, o: &Function, d: &Function) -> Result<Applied, ProviderError> {
        let config_changed = o.role != d.role
            || o.memory_mb != d.memory_mb
            || o.timeout_s != d.timeout_s
            || o.env != d.env
            || o.runtime != d.runtime
            || o.handler != d.handler;
        if config_changed {
            self.update_config(id, d).await?;
        }
        if o.code != d.code || o.architecture != d.architecture {
            self.update_code(id, d).await?;
        }
        read_back_and_tag(self, &self.0.lambda, id, d, &o.tags, &d.tags).await
    }

    async fn delete(&self, id: &str, _last: &Function) -> Result<(), ProviderError> {
        let r = self
            .0
            .lambda
            .delete_function()
            .function_name(id)
            .send()
            .await;
        r.aws("lambda:DeleteFunction").missing_ok()
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
