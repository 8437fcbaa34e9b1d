//! The local Kubernetes API: `kube-fake-client`'s in-memory API served over HTTP on
//! loopback, so the provider always talks to Kubernetes through kube-rs over HTTP —
//! against a real cluster, EKS, or this.
//!
//! Two additions over the fake itself:
//! - server-side dry-run (`?dryRun=All`), which the fake does not implement: the
//!   request runs against a scratch copy holding only the current object, so nothing
//!   is persisted;
//! - an optional snapshot file, rewritten after every mutating request and loaded at
//!   start, so a local API served by one `stack` process outlives it.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::K8sError;

/// Collection paths snapshotted (every kind the provider manages).
pub const SNAPSHOT_PATHS: [&str; 5] = [
    "/api/v1/namespaces",
    "/apis/apps/v1/deployments",
    "/api/v1/services",
    "/apis/autoscaling/v2/horizontalpodautoscalers",
    "/apis/policy/v1/poddisruptionbudgets",
];

/// The in-memory API and how it is persisted.
#[derive(Clone)]
pub struct FakeApi {
    client: kube::Client,
    snapshot: Option<PathBuf>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

async fn build_fake(objects: Vec<Value>) -> Result<kube::Client, K8sError> {
    kube_fake_client::ClientBuilder::new()
        .with_return_managed_fields()
        .with_status_subresource::<Deployment>()
        .with_runtime_objects(objects)
        .build()
        .await
        .map_err(|e| K8sError::Local(format!("starting the in-memory API: {e}")))
}

fn body_bytes(b: Vec<u8>) -> kube::client::Body {
    kube::client::Body::from(b)
}

impl FakeApi {
    /// A fresh API, loading `snapshot` when it exists.
    pub async fn new(snapshot: Option<PathBuf>) -> Result<FakeApi, K8sError> {
        let mut objects = Vec::new();
        if let Some(p) = &snapshot {
            if let Ok(text) = std::fs::read_to_string(p) {
                let v: Vec<Value> = serde_json::from_str(&text)
                    .map_err(|e| K8sError::Local(format!("{}: {e}", p.display())))?;
                objects = v;
            }
        }
        Ok(FakeApi {
            client: build_fake(objects).await?,
            snapshot,
            lock: Arc::default(),
        })
    }

    /// A kube client talking to this API in process (no HTTP), for tests that seed it.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    async fn send(
        client: &kube::Client,
        method: Method,
        uri: &str,
        headers: &http::HeaderMap,
        body: Vec<u8>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), K8sError> {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            if k != http::header::HOST && k != http::header::AUTHORIZATION {
                req = req.header(k, v);
            }
        }
        let req = req
            .body(body_bytes(body))
            .map_err(|e| K8sError::Local(e.to_string()))?;
        let resp = client
            .send(req)
            .await
            .map_err(|e| K8sError::Local(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| K8sError::Local(e.to_string()))?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    /// Handles one API request.
    pub async fn handle(
        &self,
        method: Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        body: Vec<u8>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), K8sError> {
        let path = uri.path();
        let query = uri.query().unwrap_or_default();
        let dry = query.split('&').any(|kv| kv == "dryRun=All");
        let mutating = method != Method::GET && method != Method::HEAD;
        let _g = if mutating {
            Some(self.lock.lock().await)
        } else {
            None
        };
        if dry {
            // Run against a scratch API holding only the current object.
            let rest: Vec<&str> = query.split('&').filter(|kv| *kv != "dryRun=All").collect();
            let target = if rest.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", rest.join("&"))
            };
            let (st, _, cur) =
                Self::send(&self.client, Method::GET, path, &http::HeaderMap::new(), vec![])
                    .await?;
            let mut seed = Vec::new();
            if st == StatusCode::OK {
                if let Ok(v) = serde_json::from_slice::<Value>(&cur) {
                    seed.push(v);
                }
            }
            let scratch = build_fake(seed).await?;
            return Self::send(&scratch, method, &target, headers, body).await;
        }
        let out = Self::send(&self.client, method, &uri.to_string(), headers, body).await?;
        if mutating && out.0.is_success() {
            self.save().await?;
        }
        Ok(out)
    }

    /// Every object, as the API returns it.
    pub async fn all_objects(&self) -> Result<Vec<Value>, K8sError> {
        let mut all = Vec::new();
        for p in SNAPSHOT_PATHS {
            let (st, _, b) =
                Self::send(&self.client, Method::GET, p, &http::HeaderMap::new(), vec![]).await?;
            if !st.is_success() {
                continue;
            }
            let list: Value =
                serde_json::from_slice(&b).map_err(|e| K8sError::Local(e.to_string()))?;
            let kind = list["kind"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches("List")
                .to_string();
            let api_version = list["apiVersion"].as_str().unwrap_or("v1").to_string();
            for mut item in list["items"].as_array().cloned().unwrap_or_default() {
                if item.get("kind").is_none() {
                    item["kind"] = kind.clone().into();
                    item["apiVersion"] = api_version.clone().into();
                }
                all.push(item);
            }
        }
        Ok(all)
    }

    async fn save(&self) -> Result<(), K8sError> {
        let Some(p) = &self.snapshot else {
            return Ok(());
        };
        let all = self.all_objects().await?;
        let text = serde_json::to_string(&all).map_err(|e| K8sError::Local(e.to_string()))?;
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, p))
            .map_err(|e| K8sError::Local(format!("{}: {e}", p.display())))
    }

    /// Serves the API over HTTP on `bind` (use port 0 for any free port).
    pub async fn serve(self, bind: SocketAddr) -> Result<Server, K8sError> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| K8sError::Local(format!("binding {bind}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| K8sError::Local(e.to_string()))?;
        let api = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let api = api.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let api = api.clone();
                        async move { Ok::<_, std::convert::Infallible>(api.respond(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Server {
            addr,
            api: self,
            task,
        })
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(e) => return error_response(&e.to_string()),
        };
        match self
            .handle(parts.method, &parts.uri, &parts.headers, body)
            .await
        {
            Ok((status, headers, bytes)) => {
                let mut r = Response::new(Full::new(bytes));
                *r.status_mut() = status;
                if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
                    r.headers_mut().insert(http::header::CONTENT_TYPE, ct.clone());
                } else {
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                }
                r
            }
            Err(e) => error_response(&e.to_string()),
        }
    }
}

fn error_response(msg: &str) -> Response<Full<Bytes>> {
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": msg, "reason": "InternalError", "code": 500
    });
    let mut r = Response::new(Full::new(Bytes::from(status.to_string())));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// A running loopback API server; stops when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The API it serves.
    pub api: FakeApi,
    task: JoinHandle<()>,
}

impl Server {
    /// A kube client for this server over HTTP.
    pub fn client(&self) -> Result<kube::Client, K8sError> {
        super::http_client(&format!("http://{}", self.addr))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
