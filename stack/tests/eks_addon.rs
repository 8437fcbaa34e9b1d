//! The `aws:eks:Addon` provider against a stub of the EKS add-on REST API served by
//! the test (moto 5.2 has no add-on API): create with OVERWRITE and tags, wait for
//! ACTIVE, read back, no diff, version update through UpdateAddon, retag, delete and
//! wait until it is gone. The stub speaks the wire format of the real API (paths,
//! JSON bodies, `x-amzn-errortype` on 404) so the real SDK calls are what is tested.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use stack::engine::plan::diff_props;
use stack::providers::aws::eks::{Addon, AddonProvider};
use stack::providers::aws::{AwsTarget, Clients};
use stack::providers::{Observed, Provider};

#[derive(Default)]
struct State {
    addon: Option<Value>,
    /// Describe calls left before a CREATING/UPDATING add-on turns ACTIVE.
    settle: u32,
    calls: Vec<(String, String, Value)>,
}

fn respond(s: &mut impl Write, status: u16, extra: &str, body: &Value) {
    let b = body.to_string();
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{b}",
        b.len()
    );
}

fn handle(st: &Mutex<State>, method: &str, path: &str, body: Value) -> (u16, String, Value) {
    let mut st = st.lock().unwrap();
    st.calls.push((method.into(), path.into(), body.clone()));
    let path = path.split('?').next().unwrap_or(path);
    let not_found = || {
        (
            404,
            "x-amzn-errortype: ResourceNotFoundException\r\n".to_string(),
            json!({ "message": "No addon: metrics-server found in cluster: c1" }),
        )
    };
    match (method, path) {
        ("POST", "/clusters/c1/addons") => {
            let a = json!({
                "addonName": body["addonName"],
                "clusterName": "c1",
                "status": "CREATING",
                "addonVersion": body.get("addonVersion").cloned().unwrap_or(json!("v0.7.2-eksbuild.1")),
                "addonArn": "arn:aws:eks:us-east-1:123456789012:addon/c1/metrics-server/x",
                "tags": body.get("tags").cloned().unwrap_or(json!({})),
            });
            st.addon = Some(a.clone());
            st.settle = 1;
            (200, String::new(), json!({ "addon": a }))
        }
        ("GET", "/clusters/c1/addons/metrics-server") => {
            let settle = st.settle;
            match st.addon.as_mut() {
                None => not_found(),
                Some(a) => {
                    if settle == 0 {
                        a["status"] = json!("ACTIVE");
                    }
                    let a = a.clone();
                    st.settle = settle.saturating_sub(1);
                    (200, String::new(), json!({ "addon": a }))
                }
            }
        }
        ("POST", "/clusters/c1/addons/metrics-server/update") => {
            let Some(a) = st.addon.as_mut() else {
                return not_found();
            };
            a["addonVersion"] = body["addonVersion"].clone();
            // ACTIVE at the next describe (the create above already made the
            // waiter poll through a CREATING answer; each poll costs 10 s).
            a["status"] = json!("UPDATING");
            st.settle = 0;
            (
                200,
                String::new(),
                json!({ "update": { "id": "u1", "status": "InProgress", "type": "AddonUpdate" } }),
            )
        }
        ("DELETE", "/clusters/c1/addons/metrics-server") => match st.addon.take() {
            None => not_found(),
            Some(mut a) => {
                a["status"] = json!("DELETING");
                (200, String::new(), json!({ "addon": a }))
            }
        },
        ("POST", p) if p.starts_with("/tags/") => {
            if let Some(a) = st.addon.as_mut() {
                for (k, v) in body["tags"].as_object().cloned().unwrap_or_default() {
                    a["tags"][k] = v;
                }
            }
            (200, String::new(), json!({}))
        }
        (m, p) => (
            400,
            "x-amzn-errortype: InvalidRequestException\r\n".into(),
            json!({ "message": format!("stub: unexpected {m} {p}") }),
        ),
    }
}

/// Serves the stub on a free loopback port; returns its URL.
fn serve(st: Arc<Mutex<State>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, extra, out) = handle(&st, &method, &path, body);
            respond(&mut conn, status, &extra, &out);
        }
    });
    url
}

/// Reads add-on `id` through the provider; it must exist.
async fn read_existing(p: &AddonProvider, id: &str, desired: &Value) -> Observed {
    let r = p.read(Some(id), desired, None).await.unwrap();
    r.unwrap_or_else(|| panic!("add-on {id} not found"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addon_create_read_update_delete_through_the_eks_api() {
    let st = Arc::new(Mutex::new(State::default()));
    let url = serve(st.clone());
    let c = Clients::new(&AwsTarget::Local { endpoint: url }, "us-east-1").await;
    let p = AddonProvider::Api(Arc::new(c));
    let mut desired = serde_json::to_value(Addon {
        cluster: "c1".into(),
        name: "metrics-server".into(),
        version: None,
        tags: [("stack".to_string(), "t".to_string())].into(),
    })
    .unwrap();

    // Nothing yet: the 404 is "absent", not an error.
    assert!(p.read(None, &desired, None).await.unwrap().is_none());

    let made = p.create(&desired).await.unwrap();
    assert_eq!(made.id, "c1|metrics-server");
    assert_eq!(made.outputs["name"], "metrics-server");
    assert_eq!(made.outputs["version"], "v0.7.2-eksbuild.1");
    {
        let st = st.lock().unwrap();
        let (_, _, body) = &st.calls[1];
        assert_eq!(body["addonName"], "metrics-server");
        assert_eq!(body["resolveConflicts"], "OVERWRITE");
        assert_eq!(body["tags"]["stack"], "t");
        assert!(body.get("addonVersion").is_none(), "unpinned: EKS picks");
        // The waiter polled until ACTIVE.
        assert_eq!(st.addon.as_ref().unwrap()["status"], "ACTIVE");
    }

    // Read back: identical to the declaration (an unpinned version is not drift).
    let obs = read_existing(&p, &made.id, &desired).await;
    assert!(diff_props(&obs.props, &desired, &[]).is_empty(), "{obs:?}");

    // Pin a version and add a tag: UpdateAddon, then TagResource.
    desired["version"] = json!("v0.7.3-eksbuild.2");
    desired["tags"]["team"] = json!("ml");
    let obs = read_existing(&p, &made.id, &desired).await;
    let changes = diff_props(&obs.props, &desired, &[]);
    assert_eq!(changes.len(), 2, "{changes:?}");
    let up = p.update(&made.id, &obs.props, &desired).await.unwrap();
    assert_eq!(up.outputs["version"], "v0.7.3-eksbuild.2");
    {
        let st = st.lock().unwrap();
        let upd = st
            .calls
            .iter()
            .find(|(m, p, _)| m == "POST" && p.ends_with("/update"))
            .expect("UpdateAddon called");
        assert_eq!(upd.2["addonVersion"], "v0.7.3-eksbuild.2");
        assert_eq!(upd.2["resolveConflicts"], "OVERWRITE");
        assert!(
            st.calls.iter().any(|(m, p, b)| m == "POST"
                && p.starts_with("/tags/")
                && b["tags"]["team"] == "ml")
        );
    }
    let obs = read_existing(&p, &made.id, &desired).await;
    assert!(diff_props(&obs.props, &desired, &[]).is_empty(), "{obs:?}");

    // Delete waits until DescribeAddon says it is gone; deleting again is fine.
    p.delete(&made.id, &desired).await.unwrap();
    assert!(st.lock().unwrap().addon.is_none());
    assert!(
        p.read(Some(&made.id), &desired, None)
            .await
            .unwrap()
            .is_none()
    );
    p.delete(&made.id, &desired).await.unwrap();
}

#[tokio::test]
async fn state_only_addon_exists_exactly_when_applied() {
    let p = AddonProvider::StateOnly;
    let d = json!({ "cluster": "c1", "name": "metrics-server", "version": null, "tags": {} });
    assert!(p.read(None, &d, None).await.unwrap().is_none());
    let made = p.create(&d).await.unwrap();
    assert_eq!(made.outputs["name"], "metrics-server");
    let again = p.read(Some(&made.id), &d, Some(&d)).await.unwrap().unwrap();
    assert_eq!(again.props, d);
    p.delete(&made.id, &d).await.unwrap();
}
