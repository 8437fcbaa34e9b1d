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
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::K8sError;

/// Prefix of every EKS token.
pub const PREFIX: &str = "k8s-aws-v1.";
/// sha256 of the empty payload (botocore signs it for STS presigns; only S3 uses
/// `UNSIGNED-PAYLOAD`).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
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

fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac(key: &[u8], msg: &str) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (UTC, proleptic Gregorian).
pub fn amz_date(epoch_secs: u64) -> String {
    let days = (epoch_secs / 86_400) as i64;
    let rem = epoch_secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The presigned STS URL for `cluster` in `region` at `epoch_secs`.
pub fn presigned_url(creds: &Creds, region: &str, cluster: &str, epoch_secs: u64) -> String {
    let host = format!("sts.{region}.amazonaws.com");
    let date = amz_date(epoch_secs);
    let day = &date[..8];
    let scope = format!("{day}/{region}/sts/aws4_request");
    // The order of the URL (as botocore writes it); the canonical form sorts.
    let mut q: Vec<(String, String)> = vec![
        ("Action".into(), "GetCallerIdentity".into()),
        ("Version".into(), "2011-06-15".into()),
        ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
        (
            "X-Amz-Credential".into(),
            format!("{}/{scope}", creds.access_key),
        ),
        ("X-Amz-Date".into(), date.clone()),
        ("X-Amz-Expires".into(), "60".into()),
        ("X-Amz-SignedHeaders".into(), "host;x-k8s-aws-id".into()),
    ];
    if let Some(t) = &creds.session_token {
        q.push(("X-Amz-Security-Token".into(), t.clone()));
    }
    let encoded: Vec<(String, String)> = q.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    let mut sorted = encoded.clone();
    sorted.sort();
    let canonical_query = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical = format!(
        "GET\n/\n{canonical_query}\nhost:{host}\nx-k8s-aws-id:{cluster}\n\nhost;x-k8s-aws-id\n{EMPTY_SHA256}"
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k = hmac(format!("AWS4{}", creds.secret_key).as_bytes(), day);
    let k = hmac(&k, region);
    let k = hmac(&k, "sts");
    let k = hmac(&k, "aws4_request");
    let sig = hex::encode(hmac(&k, &to_sign));
    let query = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("https://{host}/?{query}&X-Amz-Signature={sig}")
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

fn write_token(path: &Path, token: &str) -> Result<(), K8sError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token)
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
    let d = eks
        .describe_cluster()
        .name(cluster)
        .send()
        .await
        .map_err(|e| {
            K8sError::Client(format!(
                "eks:DescribeCluster {cluster}: {}",
                aws_sdk_eks::error::DisplayErrorContext(e)
            ))
        })?;
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

    #[test]
    fn amz_date_formats_utc() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        // 2026-11-29T01:02:03Z
        assert_eq!(amz_date(1_795_914_123), "20261129T010203Z");
    }
}
