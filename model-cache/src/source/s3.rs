//! The S3 stage of [`ModelSource`](super::ModelSource) (cargo feature `s3`): a
//! checkpoint's files under `s3://bucket/prefix/`, fetched concurrently into the cache
//! entry with the same guarantees as the Hub path — each file streamed into a staging
//! file while it is hashed, checked, synced and renamed into place; `manifest.json`
//! (size + sha256 of every file) written last, so a later resolve reuses the copy only
//! when every file is whole.
//!
//! Expected sizes and hashes come from, in order of strength: a `manifest.json` under
//! the prefix (the cache's own format, e.g. a cache entry uploaded as is, or
//! `model-cache manifest DIR`), which also names the files to fetch; S3's full-object
//! SHA-256 checksum when the object was uploaded with one; and the response's
//! `Content-Length`.

use std::path::{Path, PathBuf};

use aws_sdk_s3::types::ChecksumMode;
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{
    CHECKPOINT_FILES, MANIFEST, Manifest, ManifestFile, S3Location, SourceError, mtime_ns,
    read_manifest, write_manifest,
};

/// Downloads what the cache entry lacks. Runs the async SDK on a runtime of its own,
/// on a thread of its own, so it can be called from anywhere (including from inside
/// another tokio runtime, where blocking on a new one would panic).
pub(super) fn download(
    s3: &S3Location,
    endpoint: Option<&str>,
    entry: &Path,
    staging: &Path,
) -> Result<(), SourceError> {
    std::fs::create_dir_all(staging).map_err(|e| SourceError::io(staging, e))?;
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("model-s3")
                .enable_all()
                .build()
                .map_err(|e| SourceError::io(staging, e))?;
            runtime.block_on(download_async(s3, endpoint, entry, staging))
        });
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// What a file must be, when something says so.
struct Expected {
    size: u64,
    sha256: String,
    /// Where the expectation comes from, for messages.
    from: String,
}

async fn download_async(
    s3: &S3Location,
    endpoint: Option<&str>,
    entry: &Path,
    staging: &Path,
) -> Result<(), SourceError> {
    let client = client(endpoint).await;
    let remote = remote_manifest(&client, s3).await?;
    let wanted: Vec<(String, bool, Option<Expected>)> = match &remote {
        Some(manifest) => manifest
            .files
            .iter()
            .map(|f| {
                let expected = Expected {
                    size: f.size,
                    sha256: f.sha256.to_ascii_lowercase(),
                    from: format!("{s3}{MANIFEST}"),
                };
                (f.name.clone(), true, Some(expected))
            })
            .collect(),
        None => CHECKPOINT_FILES
            .iter()
            .map(|&(name, required)| (name.to_string(), required, None))
            .collect(),
    };

    let existing = read_manifest(entry).unwrap_or_default();
    let mut files = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (name, required, expected) in wanted {
        // A manifest could name "../x": only plain file names land in the entry.
        if name.is_empty()
            || name.contains(['/', '\\'])
            || name.starts_with('.')
            || name == MANIFEST
        {
            return Err(SourceError::S3 {
                bucket: s3.bucket.clone(),
                key: s3.key(MANIFEST),
                detail: format!("lists {name:?}, which is not a checkpoint file name"),
            });
        }
        let target = entry.join(&name);
        // Intact files of an earlier fetch stay (as on the Hub path).
        if let Some(known) = existing.files.iter().find(|f| f.name == name)
            && expected
                .as_ref()
                .is_none_or(|e| e.size == known.size && e.sha256 == known.sha256)
            && known.check(&target).is_ok()
        {
            files.push(known.clone());
            continue;
        }
        let object = Object {
            client: client.clone(),
            bucket: s3.bucket.clone(),
            key: s3.key(&name),
            partial: staging.join(&name),
            target,
            name,
            required,
            expected,
        };
        tasks.spawn(object.fetch());
    }
    // The first failure returns at once; dropping the set aborts the other downloads.
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => files.extend(result?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                return Err(SourceError::S3 {
                    bucket: s3.bucket.clone(),
                    key: s3.key(""),
                    detail: format!("download task failed: {e}"),
                });
            }
        }
    }
    if !files
        .iter()
        .any(|f| f.name == "tokenizer.json" || f.name == "vocab.txt")
    {
        return Err(SourceError::S3 {
            bucket: s3.bucket.clone(),
            key: s3.key(""),
            detail: "the prefix has neither tokenizer.json nor vocab.txt".into(),
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    write_manifest(
        entry,
        &Manifest {
            model_id: s3.to_string(),
            revision: String::new(),
            files,
        },
    )
}

/// The SDK client: the standard configuration chain (env credentials on Lambda), with
/// path-style addressing for local stand-ins, which serve buckets as paths.
async fn client(endpoint: Option<&str>) -> aws_sdk_s3::Client {
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let custom_endpoint = endpoint.is_some()
        || ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(custom_endpoint);
    if let Some(url) = endpoint {
        config = config.endpoint_url(url);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

/// `manifest.json` under the prefix, if there is one.
async fn remote_manifest(
    client: &aws_sdk_s3::Client,
    s3: &S3Location,
) -> Result<Option<Manifest>, SourceError> {
    let key = s3.key(MANIFEST);
    let err = |detail: String| SourceError::S3 {
        bucket: s3.bucket.clone(),
        key: key.clone(),
        detail,
    };
    let output = match client
        .get_object()
        .bucket(&s3.bucket)
        .key(&key)
        .send()
        .await
    {
        Ok(output) => output,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(err(describe(&e))),
    };
    let bytes = output
        .body
        .collect()
        .await
        .map_err(|e| err(e.to_string()))?
        .into_bytes();
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| err(format!("not a model-cache manifest: {e}")))?;
    Ok(Some(manifest))
}

/// A service error reads best as S3's code and message; a transport error needs the
/// whole context (endpoint, DNS, TLS) to be diagnosable.
fn describe<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.as_service_error() {
        Some(service) => format!(
            "{}: {} (check the S3 URI and that the caller may s3:GetObject)",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("no message")
        ),
        None => aws_sdk_s3::error::DisplayErrorContext(error).to_string(),
    }
}

/// One object to fetch into `target` through `partial`.
struct Object {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    partial: PathBuf,
    target: PathBuf,
    name: String,
    required: bool,
    expected: Option<Expected>,
}

impl Object {
    /// `Ok(None)` when an optional object does not exist.
    async fn fetch(self) -> Result<Option<ManifestFile>, SourceError> {
        let err = |detail: String| SourceError::S3 {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            detail,
        };
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .checksum_mode(ChecksumMode::Enabled);
        let output = match request.send().await {
            Ok(output) => output,
            Err(e) => {
                let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key());
                if missing && !self.required {
                    return Ok(None);
                }
                return Err(err(describe(&e)));
            }
        };
        let declared = output.content_length().and_then(|n| u64::try_from(n).ok());
        // A multipart upload's checksum is one of checksums ("…-N"), not the file's.
        let s3_sha256 = output
            .checksum_sha256()
            .filter(|c| !c.contains('-'))
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
            .filter(|raw| raw.len() == 32)
            .map(hex::encode);

        let io = |path: &Path, e| SourceError::io(path, e);
        let file = tokio::fs::File::create(&self.partial)
            .await
            .map_err(|e| io(&self.partial, e))?;
        let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = output.body;
        while let Some(chunk) = body.next().await {
            // The SDK checks the object's checksum as it streams; its mismatch error is
            // the cause of a bare "streaming error", so print the whole chain.
            let chunk = chunk.map_err(|e| {
                err(format!(
                    "reading the body: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| io(&self.partial, e))?;
        }
        writer.flush().await.map_err(|e| io(&self.partial, e))?;
        let file = writer.into_inner();
        file.sync_all().await.map_err(|e| io(&self.partial, e))?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());

        if let Some(declared) = declared
            && declared != size
        {
            return Err(err(format!(
                "received {size} bytes, S3 declared {declared}"
            )));
        }
        if let Some(expected) = &self.expected {
            if size != expected.size {
                return Err(err(format!(
                    "{size} bytes, {} says {}",
                    expected.from, expected.size
                )));
            }
            if sha256 != expected.sha256 {
                return Err(err(format!(
                    "corrupt: sha256 {sha256}, {} says {}",
                    expected.from, expected.sha256
                )));
            }
        }
        if let Some(checksum) = s3_sha256
            && checksum != sha256
        {
            return Err(err(format!(
                "corrupt: sha256 {sha256}, the object's S3 checksum says {checksum}"
            )));
        }
        tokio::fs::rename(&self.partial, &self.target)
            .await
            .map_err(|e| io(&self.target, e))?;
        let meta = tokio::fs::metadata(&self.target)
            .await
            .map_err(|e| io(&self.target, e))?;
        Ok(Some(ManifestFile {
            name: self.name,
            size,
            sha256,
            verified_mtime_ns: mtime_ns(&meta).unwrap_or_default(),
        }))
    }
}
