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
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::K8sError;

/// The fake parses `/api/v1/namespaces/{x}` as a namespaced path, so it cannot reach
/// Namespace objects: this server keeps them itself (apply = JSON merge, like the
/// fake's own apply), on the same snapshot.
fn namespace_path(path: &str) -> Option<Option<String>> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces"] => Some(None),
        ["api", "v1", "namespaces", name] => Some(Some((*name).to_string())),
        _ => None,
    }
}

/// RFC 7386 JSON merge.
fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn selector_matches(obj: &Value, query: &str) -> bool {
    let Some(sel) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
    else {
        return true;
    };
    let sel = sel
        .replace("%3D", "=")
        .replace("%2C", ",")
        .replace("%2F", "/");
    sel.split(',')
        .filter(|t| !t.is_empty())
        .all(|t| match t.split_once('=') {
            Some((k, v)) => obj["metadata"]["labels"][k] == v,
            None => obj["metadata"]["labels"].get(t).is_some(),
        })
}

fn json_response(status: StatusCode, v: &Value) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    (status, h, Bytes::from(v.to_string()))
}

fn status_response(code: u16, reason: &str, message: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": if code < 300 { "Success" } else { "Failure" },
            "message": message, "reason": reason, "code": code
        }),
    )
}

/// Collection paths snapshotted (every kind the provider manages).
pub const SNAPSHOT_PATHS: [&str; 4] = [
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
    ns: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Value>>>,
}

async fn build_fake(objects: Vec<Value>) -> Result<kube::Client, K8sError> {
    kube_fake_client::ClientBuilder::new()
        .with_return_managed_fields()
        .with_status_subresource::<Deployment>()
        .with_status_subresource::<HorizontalPodAutoscaler>()
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
        if let Some(p) = &snapshot
            && let Ok(text) = std::fs::read_to_string(p)
        {
            let v: Vec<Value> = serde_json::from_str(&text)
                .map_err(|e| K8sError::Local(format!("{}: {e}", p.display())))?;
            objects = v;
        }
        let (nss, objects): (Vec<Value>, Vec<Value>) =
            objects.into_iter().partition(|o| o["kind"] == "Namespace");
        let ns = nss
            .into_iter()
            .map(|o| {
                let n = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                (n, o)
            })
            .collect();
        Ok(FakeApi {
            client: build_fake(objects).await?,
            snapshot,
            lock: Arc::default(),
            ns: Arc::new(std::sync::Mutex::new(ns)),
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
        let query = uri.query().unwrap_or_default();
        if let Some(name) = namespace_path(uri.path()) {
            return self.namespaces(method, name, query, &body).await;
        }
        self.handle_inner(method, uri.path(), query, headers, body)
            .await
    }

    async fn namespaces(
        &self,
        method: Method,
        name: Option<String>,
        query: &str,
        body: &[u8],
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), K8sError> {
        let dry = query.split('&').any(|kv| kv == "dryRun=All");
        let mut out = {
            let mut map = self
                .ns
                .lock()
                .map_err(|_| K8sError::Local("namespace store poisoned".into()))?;
            match (method.clone(), name) {
                (Method::GET, None) => {
                    let items: Vec<Value> = map
                        .values()
                        .filter(|o| selector_matches(o, query))
                        .cloned()
                        .collect();
                    return Ok(json_response(
                        StatusCode::OK,
                        &serde_json::json!({
                            "kind": "NamespaceList", "apiVersion": "v1",
                            "metadata": { "resourceVersion": "1" }, "items": items
                        }),
                    ));
                }
                (Method::GET, Some(n)) => {
                    return Ok(match map.get(&n) {
                        Some(o) => json_response(StatusCode::OK, o),
                        None => status_response(
                            404,
                            "NotFound",
                            &format!("namespaces \"{n}\" not found"),
                        ),
                    });
                }
                (Method::PATCH, Some(n)) => {
                    let patch: Value = serde_json::from_slice(body)
                        .map_err(|e| K8sError::Local(format!("namespace patch: {e}")))?;
                    let mut obj = map.get(&n).cloned().unwrap_or_else(|| {
                        serde_json::json!({
                            "apiVersion": "v1", "kind": "Namespace",
                            "metadata": {
                                "name": n,
                                "uid": format!("ns-{n}"),
                                "creationTimestamp": "1970-01-01T00:00:00Z"
                            },
                            "spec": { "finalizers": ["kubernetes"] },
                            "status": { "phase": "Active" }
                        })
                    });
                    merge(&mut obj, &patch);
                    let rv = obj["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0);
                    obj["metadata"]["resourceVersion"] = (rv + 1).to_string().into();
                    if !dry {
                        map.insert(n, obj.clone());
                    }
                    json_response(StatusCode::OK, &obj)
                }
                (Method::DELETE, Some(n)) => match map.get(&n).cloned() {
                    Some(o) => {
                        if !dry {
                            map.remove(&n);
                        }
                        json_response(StatusCode::OK, &o)
                    }
                    None => {
                        status_response(404, "NotFound", &format!("namespaces \"{n}\" not found"))
                    }
                },
                (m, _) => {
                    return Ok(status_response(
                        405,
                        "MethodNotAllowed",
                        &format!("{m} on namespaces"),
                    ));
                }
            }
        };
        if !dry && out.0.is_success() {
            self.save().await?;
        }
        out.1.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(out)
    }

    async fn handle_inner(
        &self,
        method: Method,
        path: &str,
        query: &str,
        headers: &http::HeaderMap,
        body: Vec<u8>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), K8sError> {
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
            let (st, _, cur) = Self::send(
                &self.client,
                Method::GET,
                path,
                &http::HeaderMap::new(),
                vec![],
            )
            .await?;
            let mut seed = Vec::new();
            if st == StatusCode::OK
                && let Ok(v) = serde_json::from_slice::<Value>(&cur)
            {
                seed.push(v);
            }
            let scratch = build_fake(seed).await?;
            return Self::send(&scratch, method, &target, headers, body).await;
        }
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let out = Self::send(&self.client, method, &target, headers, body).await?;
        if mutating && out.0.is_success() {
            self.save().await?;
        }
        Ok(out)
    }

    /// Every object, as the API returns it.
    pub async fn all_objects(&self) -> Result<Vec<Value>, K8sError> {
        let mut all: Vec<Value> = self
            .ns
            .lock()
            .map_err(|_| K8sError::Local("namespace store poisoned".into()))?
            .values()
            .cloned()
            .collect();
        for p in SNAPSHOT_PATHS {
            let (st, _, b) = Self::send(
                &self.client,
                Method::GET,
                p,
                &http::HeaderMap::new(),
                vec![],
            )
            .await?;
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
                    r.headers_mut()
                        .insert(http::header::CONTENT_TYPE, ct.clone());
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
