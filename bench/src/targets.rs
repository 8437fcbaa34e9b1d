//! Where the backends are: `--target NAME=URL` flags, else `stack outputs --json`
//! (`api_url` → lambda, `service_url` → k8s, `router_url` → router).
//!
//! The stack's outputs are read by the router crate's `url_outputs`; the bench takes
//! whichever of the three exist (a stack without the router, or without the cluster,
//! can still be measured).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};

/// The backends a run can measure, in the order they are listed.
pub const NAMES: [&str; 3] = ["lambda", "k8s", "router"];

/// `stack outputs` names of each backend.
const OUTPUTS: [(&str, &str); 3] = [
    ("lambda", "api_url"),
    ("k8s", "service_url"),
    ("router", "router_url"),
];

/// One backend: its name and base URL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    pub name: String,
    pub url: String,
}

impl Target {
    /// The `POST /predict` URL under the base URL.
    pub fn predict_url(&self) -> String {
        format!("{}/predict", self.url.trim_end_matches('/'))
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Parses a `--target NAME=URL` flag.
pub fn parse_target(s: &str) -> anyhow::Result<Target> {
    let (name, url) = s
        .split_once('=')
        .context("--target is NAME=URL, e.g. k8s=http://127.0.0.1:8080")?;
    let name = name.trim();
    if !NAMES.contains(&name) {
        bail!("--target name {name:?} is not one of lambda, k8s, router");
    }
    if !is_url(url) {
        bail!("--target {name}: {url:?} is not an http(s) URL");
    }
    Ok(Target {
        name: name.to_string(),
        url: url.to_string(),
    })
}

/// The targets named in `stack outputs --json`'s object (output name → value).
pub fn from_outputs(json: &str) -> anyhow::Result<Vec<Target>> {
    targets_of(sentiment_router::config::url_outputs(json)?)
}

/// Runs `bin outputs --json` and reads its targets.
pub fn from_stack(bin: &Path) -> anyhow::Result<Vec<Target>> {
    Ok(endpoints(&[], bin)?.targets)
}

/// The backends, and the Lambda function whose logs tell what they did.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub targets: Vec<Target>,
    /// The stack's `function_name` output; `None` when the targets came from flags.
    pub function_name: Option<String>,
}

/// [`resolve`], and the stack's function name from the same `stack outputs --json`.
pub fn endpoints(flags: &[Target], stack_bin: &Path) -> anyhow::Result<Endpoints> {
    if !flags.is_empty() {
        return Ok(Endpoints {
            targets: resolve(flags, stack_bin)?,
            function_name: None,
        });
    }
    let json = sentiment_router::config::outputs_json_from_stack(stack_bin)
        .context("reading the endpoints (see --stack-bin)")?;
    let function_name = serde_json::from_str::<serde_json::Value>(json.trim())
        .ok()
        .and_then(|v| v["function_name"].as_str().map(str::to_string));
    let mut targets = from_outputs(&json)?;
    order(&mut targets);
    Ok(Endpoints {
        targets,
        function_name,
    })
}

fn targets_of(urls: BTreeMap<String, String>) -> anyhow::Result<Vec<Target>> {
    let targets: Vec<Target> = OUTPUTS
        .iter()
        .filter_map(|(name, output)| {
            Some(Target {
                name: name.to_string(),
                url: urls.get(*output)?.clone(),
            })
        })
        .collect();
    if targets.is_empty() {
        bail!("stack outputs has none of api_url, service_url, router_url: run `stack up` first");
    }
    Ok(targets)
}

/// The run's targets: the flags if any (one per name, the last flag wins), else the
/// stack's outputs; in the order lambda, k8s, router.
pub fn resolve(flags: &[Target], stack_bin: &Path) -> anyhow::Result<Vec<Target>> {
    if flags.is_empty() {
        return from_stack(stack_bin);
    }
    let mut targets: Vec<Target> = Vec::new();
    for f in flags {
        targets.retain(|x| x.name != f.name);
        targets.push(f.clone());
    }
    order(&mut targets);
    Ok(targets)
}

/// In the order lambda, k8s, router.
fn order(targets: &mut [Target]) {
    targets.sort_by_key(|t| NAMES.iter().position(|n| *n == t.name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_flags_parse() {
        let t = parse_target("k8s=http://127.0.0.1:8080/").unwrap();
        assert_eq!(t.name, "k8s");
        assert_eq!(t.predict_url(), "http://127.0.0.1:8080/predict");
        assert!(parse_target("gcp=http://x").is_err());
        assert!(parse_target("lambda").is_err());
        assert!(parse_target("lambda=ftp://x").is_err());
    }

    #[test]
    fn flags_win_and_are_ordered() {
        let flags = [
            parse_target("router=http://r").unwrap(),
            parse_target("lambda=http://a").unwrap(),
            parse_target("lambda=http://b").unwrap(),
        ];
        let t = resolve(&flags, Path::new("/nonexistent/stack")).unwrap();
        let names: Vec<_> = t
            .iter()
            .map(|t| (t.name.as_str(), t.url.as_str()))
            .collect();
        assert_eq!(names, [("lambda", "http://b"), ("router", "http://r")]);
    }

    #[test]
    fn outputs_give_the_urls_that_exist() {
        let t = from_outputs(r#"{"api_url":"https://x.execute-api/","service_url":"http://127.0.0.1:1","bucket":"b"}"#)
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "lambda");
        assert_eq!(t[1].url, "http://127.0.0.1:1");
        assert!(from_outputs(r#"{"bucket":"b"}"#).is_err());
        assert!(from_outputs("[]").is_err());
        assert!(from_outputs("not json").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_fake_stack_binary_is_run() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("stack");
        test_support::write_executable(
            &bin,
            "#!/bin/sh\n[ \"$1 $2\" = \"outputs --json\" ] || exit 3\n\
             echo '{\"router_url\":\"http://127.0.0.1:8090\",\"api_url\":\"http://127.0.0.1:9001/\",\"service_url\":\"http://127.0.0.1:9002\",\"function_name\":\"s-predict\"}'\n",
        );
        let t = resolve(&[], &bin).unwrap();
        let names: Vec<_> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, NAMES);
        assert_eq!(t[2].url, "http://127.0.0.1:8090");
        // One run of the stack gives the function too; flags name none.
        let e = endpoints(&[], &bin).unwrap();
        assert_eq!(
            (e.targets, e.function_name.as_deref()),
            (t, Some("s-predict"))
        );
        let flags = [parse_target("k8s=http://k").unwrap()];
        assert_eq!(endpoints(&flags, &bin).unwrap().function_name, None);

        let failing = dir.path().join("failing");
        test_support::write_executable(&failing, "#!/bin/sh\nexit 1\n");
        assert!(resolve(&[], &failing).is_err());
        assert!(resolve(&[], &dir.path().join("missing")).is_err());
    }
}
