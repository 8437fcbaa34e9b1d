//! The API Gateway HTTP API in front of the function, as AWS runs it for an
//! `AWS_PROXY` integration with payload format 2.0:
//! - route matching on the declared route keys (`POST /predict`, `GET /items/{id}`,
//!   `ANY /files/{proxy+}`, `$default`): the most specific route wins, and a request
//!   no route matches gets `404 {"message":"Not Found"}` without invoking anything;
//! - the event: `routeKey`, `rawPath`, `rawQueryString`, lower-cased headers (repeats
//!   joined by commas), `cookies`, `queryStringParameters`, `pathParameters`, a request
//!   id (also sent back as `apigw-requestid`), and the body as text for text content
//!   types, base64 for anything else;
//! - AWS's limits and answers: a request body over 10 MB is `413`, an event over
//!   Lambda's 6 MB synchronous payload limit is `413`, no answer within the integration
//!   timeout (30 s at most) is `503 {"message":"Service Unavailable"}`, and a function
//!   that fails (unhandled error, crash, failed init, timeout, throttled) is
//!   `500 {"message":"Internal Server Error"}` — API Gateway does not pass Lambda's 429
//!   through. The emulator adds `x-lambda-error-type` and `x-lambda-error` so a local
//!   user sees why; the same text is in the function's log, as in CloudWatch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request};
use serde_json::{Value, json};

use crate::{
    Answer, HttpResponse, Invocation, Shared, json_response, response, with_lambda_headers,
};

/// API Gateway's largest HTTP API request payload.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Lambda's largest synchronous invocation payload (request and response), 6 MB.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// The longest integration timeout an HTTP API allows.
pub const MAX_INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP API in front of the function.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The API's id (in the event's request context).
    pub api_id: String,
    /// Route keys that invoke the function.
    pub routes: Vec<String>,
    /// How long API Gateway waits for the function (at most 30 s).
    pub integration_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_id: "local".into(),
            routes: vec!["$default".into()],
            integration_timeout: MAX_INTEGRATION_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

#[derive(Debug, Clone)]
struct Route {
    key: String,
    /// `None` for `ANY`.
    method: Option<String>,
    segments: Vec<Segment>,
}

/// The declared routes, parsed once.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
    default: bool,
}

/// A matched route: its key and the path parameters it bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub route_key: String,
    pub params: BTreeMap<String, String>,
}

impl Routes {
    /// Parses route keys; an error names the key and what is wrong with it.
    pub fn parse(keys: &[String]) -> Result<Routes, String> {
        let mut routes = Vec::new();
        let mut default = false;
        for key in keys {
            if key == "$default" {
                default = true;
                continue;
            }
            let (method, path) = key
                .split_once(' ')
                .ok_or_else(|| format!("route key `{key}` must be `$default` or `METHOD /path`"))?;
            if !path.starts_with('/') {
                return Err(format!("route key `{key}`: the path must start with `/`"));
            }
            let segments = split(path)
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => match name.strip_suffix('+') {
                            Some(name) => Segment::Greedy(name.to_string()),
                            None => Segment::Param(name.to_string()),
                        },
                        None => Segment::Literal(s.to_string()),
                    },
                )
                .collect::<Vec<_>>();
            if let Some(i) = segments
                .iter()
                .position(|s| matches!(s, Segment::Greedy(_)))
                && i + 1 != segments.len()
            {
                return Err(format!(
                    "route key `{key}`: a greedy `{{name+}}` segment must be the last"
                ));
            }
            routes.push(Route {
                key: key.clone(),
                method: (method != "ANY").then(|| method.to_ascii_uppercase()),
                segments,
            });
        }
        Ok(Routes { routes, default })
    }

    /// The most specific route for a request: literal segments over parameters over a
    /// greedy tail, a named method over `ANY`; `$default` when nothing else matches.
    pub fn find(&self, method: &str, path: &str) -> Option<Matched> {
        let parts: Vec<&str> = split(path).collect();
        self.routes
            .iter()
            .filter(|r| r.method.as_deref().is_none_or(|m| m == method))
            .filter_map(|r| bind(r, &parts).map(|params| (r, params)))
            .min_by_key(|(r, params)| {
                let greedy = r.segments.iter().any(|s| matches!(s, Segment::Greedy(_)));
                (greedy, params.len(), r.method.is_none())
            })
            .map(|(r, params)| Matched {
                route_key: r.key.clone(),
                params,
            })
            .or_else(|| {
                self.default.then(|| Matched {
                    route_key: "$default".into(),
                    params: BTreeMap::new(),
                })
            })
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn bind(route: &Route, parts: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for (i, segment) in route.segments.iter().enumerate() {
        match segment {
            Segment::Greedy(name) => {
                let rest = parts.get(i..).filter(|rest| !rest.is_empty())?;
                params.insert(name.clone(), rest.join("/"));
                return Some(params);
            }
            Segment::Literal(want) => (parts.get(i)? == want).then_some(())?,
            Segment::Param(name) => {
                params.insert(name.clone(), (*parts.get(i)?).to_string());
            }
        }
    }
    (parts.len() == route.segments.len()).then_some(params)
}

/// Whether API Gateway passes a body of this content type as text (else base64).
pub fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("/json")
        || essence.ends_with("+json")
        || essence.ends_with("/xml")
        || essence.ends_with("+xml")
        || essence == "application/javascript"
        || essence == "application/x-www-form-urlencoded"
}

/// A response API Gateway itself makes (`{"message": ...}`).
fn gateway(status: u16, message: &str, request_id: &str) -> HttpResponse {
    with_request_id(
        json_response(status, &json!({ "message": message })),
        request_id,
    )
}

fn with_request_id(mut r: HttpResponse, request_id: &str) -> HttpResponse {
    if let Ok(v) = hyper::header::HeaderValue::from_str(request_id) {
        r.headers_mut().insert("apigw-requestid", v);
    }
    r
}

/// API Gateway's answer to any failed invocation: `500 {"message":"Internal Server
/// Error"}`, with Lambda's error type and text for a local user.
fn failed(request_id: &str, error_type: &str, detail: &str) -> HttpResponse {
    with_error(
        gateway(500, "Internal Server Error", request_id),
        error_type,
        detail,
    )
}

/// Why the emulator answered an error, for a local user (Lambda's error type and text).
fn with_error(mut r: HttpResponse, error_type: &str, message: &str) -> HttpResponse {
    let one_line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect();
    let headers = r.headers_mut();
    if let Ok(v) = hyper::header::HeaderValue::from_str(error_type) {
        headers.insert("x-lambda-error-type", v);
    }
    if let Ok(v) = hyper::header::HeaderValue::from_str(&one_line) {
        headers.insert("x-lambda-error", v);
    }
    r
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An API Gateway style request id (base64 of a few bytes, e.g. `cEz3mjgWIAMEYxA=`).
fn request_id() -> String {
    let seq = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut bytes = [0u8; 10];
    bytes[..6].copy_from_slice(&seq.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&nanos.to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Serves one request the way the HTTP API would.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    let id = request_id();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let Some(matched) = shared.routes.find(&method, &path) else {
        return gateway(404, "Not Found", &id);
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES) {
        return gateway(413, "Request Entity Too Large", &id);
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return gateway(413, "Request Entity Too Large", &id),
    };
    let event = event(
        &shared.config.api.api_id,
        &id,
        &method,
        &path,
        &query,
        &headers,
        &matched,
        &body,
    );
    let payload = Bytes::from(event.to_string());
    if payload.len() > MAX_PAYLOAD_BYTES {
        let r = gateway(413, "Request Entity Too Large", &id);
        return with_error(
            r,
            "RequestEntityTooLargeException",
            &format!(
                "the event is {} bytes; Lambda's synchronous limit is {MAX_PAYLOAD_BYTES}",
                payload.len()
            ),
        );
    }
    // The invocation runs to its end (or the function's timeout) even when API
    // Gateway has stopped waiting, as in AWS.
    let invocation = tokio::spawn({
        let shared = Arc::clone(&shared);
        async move { shared.invoke(payload).await }
    });
    let timeout = shared
        .config
        .api
        .integration_timeout
        .min(MAX_INTEGRATION_TIMEOUT);
    let invocation: Invocation = match tokio::time::timeout(timeout, invocation).await {
        Err(_) => {
            let r = gateway(503, "Service Unavailable", &id);
            return with_error(
                r,
                "IntegrationTimeout",
                &format!("no answer within the integration timeout ({timeout:.1?})"),
            );
        }
        Ok(Err(e)) => {
            return failed(&id, "ServiceException", &e.to_string());
        }
        Ok(Ok(invocation)) => invocation,
    };
    let answer = match &invocation.result {
        Ok(Answer::Response(payload)) if payload.len() > MAX_PAYLOAD_BYTES => failed(
            &id,
            "ResponseSizeTooLarge",
            &format!(
                "the response is {} bytes; Lambda's synchronous limit is {MAX_PAYLOAD_BYTES}",
                payload.len()
            ),
        ),
        Ok(Answer::Response(payload)) => match http_from_payload(payload) {
            Some(r) => with_request_id(r, &id),
            None => failed(
                &id,
                "InvalidResponse",
                "the function's response is not JSON",
            ),
        },
        Ok(Answer::FunctionError(payload)) => {
            let error_type = serde_json::from_slice::<Value>(payload)
                .ok()
                .and_then(|v| v.get("errorType").and_then(Value::as_str).map(String::from))
                .unwrap_or_else(|| "Unhandled".into());
            failed(&id, &error_type, &String::from_utf8_lossy(payload))
        }
        Err(e) => failed(&id, e.error_type(), &e.to_string()),
    };
    with_lambda_headers(answer, &invocation)
}

/// The payload 2.0 event for a request.
#[allow(clippy::too_many_arguments)]
fn event(
    api_id: &str,
    request_id: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    matched: &Matched,
    body: &Bytes,
) -> Value {
    let mut joined = serde_json::Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == hyper::header::COOKIE {
            cookies.extend(
                value
                    .split(';')
                    .map(|c| Value::String(c.trim().to_string())),
            );
            continue;
        }
        // API Gateway joins repeated headers with commas; names arrive lower-cased.
        match joined.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                joined.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let header = |name: &str| joined.get(name).and_then(Value::as_str).map(str::to_string);
    let user_agent = header("user-agent").unwrap_or_default();
    let domain = header("host").unwrap_or_else(|| "localhost".into());
    let content_type = header("content-type");
    let (body, is_base64) = match std::str::from_utf8(body) {
        Ok(text) if is_text(content_type.as_deref()) => (text.to_string(), false),
        _ => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": matched.route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": joined,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": api_id,
            "domainName": domain,
            "domainPrefix": domain.split('.').next().unwrap_or(""),
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": matched.route_key,
            "stage": "$default",
            "time": httpdate(now),
            "timeEpoch": now.as_millis() as u64,
        },
        "isBase64Encoded": is_base64,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    let params = query_parameters(query);
    if !params.is_empty() {
        event["queryStringParameters"] = json!(params);
    }
    if !matched.params.is_empty() {
        event["pathParameters"] = json!(matched.params);
    }
    if !body.is_empty() {
        event["body"] = Value::String(body);
    }
    event
}

/// Query parameters as API Gateway 2.0 gives them: repeated names joined by commas.
fn query_parameters(query: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(k.to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(v);
            })
            .or_insert_with(|| v.to_string());
    }
    out
}

/// `07/Dec/2026:04:30:00 +0000`, the request context's `time` format.
fn httpdate(since_epoch: Duration) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// API Gateway's reading of a function's response (payload format 2.0): an object with
/// `statusCode` is an HTTP response; any other JSON is a 200 `application/json` body;
/// anything else is no answer (`None`).
fn http_from_payload(payload: &Bytes) -> Option<HttpResponse> {
    let value = serde_json::from_slice::<Value>(payload).ok()?;
    let Some(status) = value.get("statusCode").and_then(Value::as_u64) else {
        return Some(json_response(200, &value));
    };
    let body = value.get("body").and_then(Value::as_str).unwrap_or("");
    let body = if value.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    let mut response = response(u16::try_from(status).unwrap_or(500), body);
    if let Some(headers) = value.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(hyper::header::HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    for cookie in value
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(Ok(v)) = cookie.as_str().map(hyper::header::HeaderValue::from_str) {
            response.headers_mut().append(hyper::header::SET_COOKIE, v);
        }
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(keys: &[&str]) -> Routes {
        Routes::parse(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_most_specific_route_wins() {
        let r = routes(&[
            "POST /predict",
            "ANY /predict",
            "GET /items/{id}",
            "GET /items/special",
            "ANY /files/{proxy+}",
        ]);
        let key = |m: &str, p: &str| r.find(m, p).map(|m| m.route_key);
        assert_eq!(key("POST", "/predict").as_deref(), Some("POST /predict"));
        assert_eq!(key("PUT", "/predict").as_deref(), Some("ANY /predict"));
        assert_eq!(
            key("GET", "/items/special").as_deref(),
            Some("GET /items/special")
        );
        let item = r.find("GET", "/items/42").unwrap();
        assert_eq!(item.route_key, "GET /items/{id}");
        assert_eq!(item.params["id"], "42");
        let file = r.find("DELETE", "/files/a/b/c.txt").unwrap();
        assert_eq!(file.params["proxy"], "a/b/c.txt");
        // No route and no $default: nothing is invoked.
        assert_eq!(key("GET", "/other"), None);
        assert_eq!(key("GET", "/files"), None);
        assert_eq!(key("GET", "/items/42/more"), None);
    }

    #[test]
    fn default_catches_what_nothing_else_matches() {
        let r = routes(&["POST /predict", "$default"]);
        assert_eq!(
            r.find("POST", "/predict").unwrap().route_key,
            "POST /predict"
        );
        assert_eq!(r.find("GET", "/anything").unwrap().route_key, "$default");
    }

    #[test]
    fn bad_route_keys_are_named() {
        let err = Routes::parse(&["POST predict".into()]).unwrap_err();
        assert!(err.contains("`POST predict`"), "{err}");
        let err = Routes::parse(&["ANY /{proxy+}/x".into()]).unwrap_err();
        assert!(err.contains("greedy"), "{err}");
        let err = Routes::parse(&["/predict".into()]).unwrap_err();
        assert!(err.contains("METHOD /path"), "{err}");
    }

    #[test]
    fn text_content_types_stay_text() {
        assert!(is_text(Some("application/json")));
        assert!(is_text(Some("application/json; charset=utf-8")));
        assert!(is_text(Some("application/vnd.api+json")));
        assert!(is_text(Some("text/plain")));
        assert!(!is_text(Some("application/octet-stream")));
        assert!(!is_text(Some("image/png")));
        assert!(!is_text(None));
    }

    #[test]
    fn the_event_carries_route_params_query_and_cookies() {
        let r = routes(&["GET /items/{id}"]);
        let matched = r.find("GET", "/items/7").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/octet-stream".parse().unwrap());
        headers.insert("cookie", "a=1; b=2".parse().unwrap());
        headers.append("x-many", "one".parse().unwrap());
        headers.append("x-many", "two".parse().unwrap());
        let body = Bytes::from_static(b"\x00\x01");
        let e = event(
            "api1",
            "rid",
            "GET",
            "/items/7",
            "q=1&q=2&z",
            &headers,
            &matched,
            &body,
        );
        assert_eq!(e["routeKey"], "GET /items/{id}");
        assert_eq!(e["pathParameters"]["id"], "7");
        assert_eq!(e["queryStringParameters"]["q"], "1,2");
        assert_eq!(e["queryStringParameters"]["z"], "");
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["headers"]["x-many"], "one,two");
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "AAE=");
        assert_eq!(e["requestContext"]["requestId"], "rid");
        assert_eq!(e["requestContext"]["apiId"], "api1");
    }

    #[test]
    fn request_time_is_in_api_gateway_format() {
        assert_eq!(
            httpdate(Duration::from_secs(0)),
            "01/Jan/1970:00:00:00 +0000"
        );
        assert_eq!(
            httpdate(Duration::from_secs(1_796_618_400)),
            "07/Dec/2026:04:40:00 +0000"
        );
    }
}
