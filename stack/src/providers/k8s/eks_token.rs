//! EKS access without kubectl or the aws CLI.
//!
//! The bearer token is what `aws eks get-token` prints: a SigV4 query-string presigned
//! URL of STS `GetCallerIdentity` (valid 60 s for the signature, accepted by EKS for
//! 15 min) with the `x-k8s-aws-id: <cluster>` header signed, base64url-encoded
//! without padding and prefixed `k8s-aws-v1.`. The client reads it from a file that a
//! background task rewrites every 10 minutes; kube-rs re-reads token files as they
//! age, so long rollouts and deletions keep a valid token.

use aws_credential_types::provider::ProvideCredentials;
use base64::Engine;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::K8sError;

/// Prefix of every EKS token.
pub const PREFIX: &str = "k8s-aws-v1.";
/// How often the token file is rewritten (tokens live 15 minutes).
pub const REFRESH: Duration = Duration::from_secs(600);

/// Credentials used to sign.
#[derive(Debug, Clone)]
pub struct Creds {
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

/// The presigned STS URL for `cluster` in `region` at `epoch_secs`, signed by the AWS
/// SDK's own SigV4 implementation (`aws-sigv4`): query-string signature valid 60 s,
/// `host` and `x-k8s-aws-id` signed, the session token in the query.
pub fn presigned_url(creds: &Creds, region: &str, cluster: &str, epoch_secs: u64) -> String {
    use aws_sigv4::http_request::{
        SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
    };
    let suffix = crate::providers::aws::dns_suffix(region);
    let url = format!("https://sts.{region}.{suffix}/?Action=GetCallerIdentity&Version=2011-06-15");
    let identity = aws_credential_types::Credentials::new(
        &creds.access_key,
        &creds.secret_key,
        creds.session_token.clone(),
        None,
        "stack-eks-token",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(60));
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch_secs))
        .settings(settings)
        .build()
        .expect("every signing parameter is set")
        .into();
    let headers = [("x-k8s-aws-id", cluster)];
    let signable = SignableRequest::new("GET", &url, headers.into_iter(), SignableBody::Bytes(&[]))
        .expect("a well-formed STS URL");
    let (instructions, _signature) = sign(signable, &params)
        .expect("signing with in-memory credentials cannot fail")
        .into_parts();
    let mut request = http::Request::builder()
        .method("GET")
        .uri(&url)
        .header("x-k8s-aws-id", cluster)
        .body(())
        .expect("a well-formed request");
    instructions.apply_to_request_http1x(&mut request);
    request.uri().to_string()
}

/// The bearer token for `cluster`.
pub fn token(creds: &Creds, region: &str, cluster: &str, epoch_secs: u64) -> String {
    let url = presigned_url(creds, region, cluster, epoch_secs);
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    )
}

async fn fresh_token(sdk: &aws_config::SdkConfig, cluster: &str) -> Result<String, K8sError> {
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| K8sError::Token("no AWS credentials configured".into()))?;
    let c = provider
        .provide_credentials()
        .await
        .map_err(|e| K8sError::Token(e.to_string()))?;
    let region = sdk
        .region()
        .map(ToString::to_string)
        .ok_or_else(|| K8sError::Token("no AWS region configured".into()))?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| K8sError::Token(e.to_string()))?
        .as_secs();
    let creds = Creds {
        access_key: c.access_key_id().to_string(),
        secret_key: c.secret_access_key().to_string(),
        session_token: c.session_token().map(str::to_string),
    };
    Ok(token(&creds, &region, cluster, now))
}

/// Writes the token readable by its owner only (it is a bearer credential for the
/// cluster), created so from the start, then renamed over the old one.
fn write_token(path: &Path, token: &str) -> Result<(), K8sError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| K8sError::Token(format!("{}: {e}", path.display())))
}

/// PEM (possibly several certificates) to DER blobs.
pub fn pem_to_der(pem: &str) -> Result<Vec<Vec<u8>>, K8sError> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN") {
            cur = Some(String::new());
        } else if line.starts_with("-----END") {
            let b64 = cur.take().unwrap_or_default();
            out.push(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| K8sError::Client(format!("cluster CA: {e}")))?,
            );
        } else if let Some(c) = cur.as_mut() {
            c.push_str(line);
        }
    }
    if out.is_empty() {
        return Err(K8sError::Client("cluster CA holds no certificate".into()));
    }
    Ok(out)
}

/// A kube client for an EKS cluster: endpoint and CA from DescribeCluster, the token
/// in `token_file`, refreshed in the background.
pub async fn client(
    eks: &aws_sdk_eks::Client,
    sdk: &aws_config::SdkConfig,
    cluster: &str,
    token_file: &Path,
) -> Result<kube::Client, K8sError> {
    let d = match eks.describe_cluster().name(cluster).send().await {
        Ok(d) => d,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            return Err(K8sError::ClusterGone(cluster.to_string()));
        }
        Err(e) => {
            return Err(K8sError::Client(format!(
                "eks:DescribeCluster {cluster}: {}",
                aws_sdk_eks::error::DisplayErrorContext(e)
            )));
        }
    };
    let c = d
        .cluster
        .ok_or_else(|| K8sError::Client(format!("cluster {cluster} not found")))?;
    let endpoint = c
        .endpoint
        .ok_or_else(|| K8sError::Client(format!("cluster {cluster} has no endpoint yet")))?;
    let ca_b64 = c
        .certificate_authority
        .and_then(|a| a.data)
        .ok_or_else(|| K8sError::Client(format!("cluster {cluster} has no CA yet")))?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|e| K8sError::Client(format!("cluster CA: {e}")))?;
    let ca = pem_to_der(&String::from_utf8_lossy(&ca_pem))?;
    if let Some(dir) = token_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| K8sError::Token(e.to_string()))?;
    }
    write_token(token_file, &fresh_token(sdk, cluster).await?)?;
    {
        let (sdk, cluster, file) = (sdk.clone(), cluster.to_string(), token_file.to_path_buf());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                match fresh_token(&sdk, &cluster).await {
                    Ok(t) => {
                        if let Err(e) = write_token(&file, &t) {
                            tracing::warn!("writing the EKS token: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("refreshing the EKS token: {e}"),
                }
            }
        });
    }
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| K8sError::Client(format!("{endpoint}: {e}")))?;
    let mut cfg = kube::Config::new(uri);
    cfg.root_cert = Some(ca);
    cfg.default_namespace = "default".into();
    cfg.auth_info.token_file = Some(token_file.display().to_string());
    super::ensure_crypto();
    kube::Client::try_from(cfg).map_err(|e| K8sError::Client(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_presigned_url_uses_the_region_s_sts_endpoint() {
        let creds = Creds {
            access_key: "AKID".into(),
            secret_key: "secret".into(),
            session_token: None,
        };
        let china = presigned_url(&creds, "cn-north-1", "c", 1_700_000_000);
        assert!(
            china.starts_with("https://sts.cn-north-1.amazonaws.com.cn/?"),
            "{china}"
        );
        let gov = presigned_url(&creds, "us-gov-west-1", "c", 1_700_000_000);
        assert!(
            gov.starts_with("https://sts.us-gov-west-1.amazonaws.com/?"),
            "{gov}"
        );
    }

    #[test]
    fn the_token_file_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eks-token");
        write_token(&path, "k8s-aws-v1.first").unwrap();
        write_token(&path, "k8s-aws-v1.second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "k8s-aws-v1.second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
