//! Providers: one per resource kind.
//!
//! The engine drives every kind through the type-erased [`Provider`] trait (JSON in,
//! [`Observed`] out). A provider is written against the typed [`ResourceProvider`]
//! trait instead: it sees its resource type, never `serde_json::Value`, and returns
//! [`Read`] / [`Created`] / [`Applied`]. The one generic adapter (the blanket
//! `impl<P: ResourceProvider> Provider for P`) decodes the properties (a bad field is a
//! [`ProviderError::Props`] naming the kind and the field), builds `Observed`, and
//! reads the resource back after an apply when the provider asks for it
//! ([`Applied::ReadBack`]).
//!
//! `aws/` talks to AWS through the AWS SDK for Rust, one file per resource type under
//! `aws/<service>/`; `k8s/` applies Kubernetes objects (Namespace, Deployment,
//! Service, HPA, PDB) through kube-rs server-side apply.
//!
//! # Adding a resource type
//!
//! Its own file, a module line, one registration line:
//!
//! 1. One file, e.g. `aws/sqs/queue.rs` (or `aws/sqs.rs` for a one-resource service),
//!    holding the resource type and its provider:
//!
//!    ```text
//!    use crate::providers::aws::prelude::*;
//!
//!    /// A queue.
//!    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
//!    #[resource(kind = "aws:sqs:Queue")]
//!    pub struct Queue {
//!        /// Queue name (forces replacement).
//!        #[resource(replace, len = 1..=80)]
//!        pub name: String,
//!        /// Tags (a `tags` field makes the kind taggable: the engine adds the stack's).
//!        #[serde(default)]
//!        pub tags: Tags,
//!    }
//!
//!    pub struct QueueProvider(pub Arc<Clients>);
//!
//!    #[async_trait]
//!    impl ResourceProvider for QueueProvider {
//!        type Resource = Queue;
//!        async fn read(&self, at: Lookup<'_, Queue>) -> Found<Queue> {
//!            let d = at.desired; // at.id: the id in state, None to look up by name or tags
//!            let r = self.0.sqs.get_queue_url().queue_name(at.id_or(&d.name)).send().await;
//!            let Some(r) = r.aws("sqs:GetQueueUrl").none_if_missing()? else { return Ok(None) };
//!            // ... props normalized to the declared shape, so no change reads as none
//!            Ok(Some(Read { id: d.name.clone(), props: d.clone(), outputs: obj(json!({ .. })) }))
//!        }
//!        async fn create(&self, d: &Queue) -> Result<Created, ProviderError> {
//!            self.0.sqs.create_queue().queue_name(&d.name).send().await.aws("sqs:CreateQueue")?;
//!            Ok(Created::read_back(&d.name)) // or Created::new(id, outputs)
//!        }
//!        async fn update(&self, id: &str, o: &Queue, d: &Queue) -> Result<Applied, ProviderError> {
//!            sync_tags(&self.0.sqs, id, &o.tags, &d.tags).await?;
//!            Ok(Applied::ReadBack)
//!        }
//!        async fn delete(&self, id: &str, _: &Queue) -> Result<(), ProviderError> {
//!            let r = self.0.sqs.delete_queue().queue_url(id).send().await;
//!            r.aws("sqs:DeleteQueue").missing_ok() // already gone is success
//!        }
//!    }
//!    ```
//!
//!    `#[derive(Resource)]` ([`stack_derive`]) declares the kind on the struct and the
//!    rest on the fields: `replace` (a change forces a replacement; the provider's
//!    [`ResourceProvider::REPLACE_PATHS`] default to these fields), and the [`Checks`]
//!    rules `len = a..=b`, `chars(a..=b, CHARSET)`, `word(CHARSET)`, `non_empty`,
//!    `one_of("A", "B")`, `within = a..=b`, whose messages name the field (or its
//!    `label = "..."`) and the value. A rule that is no one field's (a cross-field
//!    bound, a syntax) is Rust in a hook, `#[resource(kind = "..", checks =
//!    Self::checks)]` with `fn checks(&self, c: Checks) -> Checks`, run after the
//!    field rules. The provider never touches JSON: the adapter decodes the properties
//!    and builds what the engine sees. A new *service* also gets its client in
//!    [`aws::Clients`] and one [`aws::Tagging`] impl in its `mod.rs`
//!    ([`aws::map_tagging!`](aws) for services with map-shaped tag calls,
//!    `aws::list_tagging!` for lists of key/value tags). A kind whose every property
//!    forces replacement leaves out `update`: the default changes nothing in place.
//! 2. `mod queue;` and `pub use queue::{Queue, QueueProvider};` in the service's
//!    `mod.rs` (a service's `mod.rs` holds only its shared helpers).
//! 3. One line in [`aws::register`]: `reg.add(sqs::QueueProvider(c.clone()));`. It is
//!    keyed by `Queue::KIND`, and panics when a replace path names no field of
//!    `Queue` (the `aws` unit tests register every provider, so `cargo test` catches
//!    it).

pub mod aws;
pub mod k8s;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::engine::Resource;
use crate::error::ProviderError;

mod checks;
mod shape;

pub use checks::{Charset, Checks};
pub use shape::{Shape, check_paths};

/// Outputs other resources can reference, by name.
pub type Outputs = Map<String, Value>;

/// The output a read sets on a resource that exists but is broken (an EKS node group
/// in CREATE_FAILED, say), to the reason: the plan then replaces the resource, showing
/// the reason, instead of reading it as healthy. A resource still being created or
/// updated is waited for by its read instead.
pub const FAILED_OUTPUT: &str = "failed";

/// What a provider observed (or produced) for one resource.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The provider id used for later reads, updates and deletes.
    pub id: String,
    /// The observed properties, normalized to the declared shape so that they compare
    /// equal to the desired properties when nothing changed (server-side defaults
    /// removed or filled from the declaration).
    pub props: Value,
    /// Outputs other resources can reference.
    pub outputs: Map<String, Value>,
}

impl Observed {
    /// What an apply reports: the id, the desired properties (now applied) and the
    /// outputs of the read made right after it (none when that read found nothing).
    pub fn applied(id: impl Into<String>, desired: &Value, now: Option<Observed>) -> Observed {
        Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: now.map(|n| n.outputs).unwrap_or_default(),
        }
    }
}

/// One resource kind's lifecycle, type-erased: what the engine calls.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Properties whose change forces a replacement (delete + create).
    fn replace_fields(&self) -> &'static [&'static str];
    /// Whether a replacement may create the new resource before deleting the old one
    /// (false when the physical name is fixed and would collide).
    fn create_before_delete(&self) -> bool {
        false
    }
    /// Whether an in-place update can change the outputs (an image's digest): the
    /// plan then treats them as unknown, so dependents (the Deployment, the function)
    /// are updated in the same run with the new values.
    fn update_changes_outputs(&self) -> bool {
        false
    }
    /// Reads the resource. `id` is the id in state, or `None` to look it up by the
    /// deterministic name or tags in `desired` (adopting what an interrupted run made).
    /// `prior` holds the last-applied properties, for attributes the API does not echo.
    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError>;
    /// Creates the resource.
    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError>;
    /// Brings an existing resource from `observed` to `desired` in place. The default
    /// creates it again, which is right only where create is an idempotent apply (a
    /// Kubernetes server-side apply, a content-addressed image push); every other
    /// provider overrides it.
    async fn update(
        &self,
        _id: &str,
        _observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        self.create(desired).await
    }
    /// Deletes the resource and waits until it is gone. Deleting something already
    /// gone succeeds.
    async fn delete(&self, id: &str, props: &Value) -> Result<(), ProviderError>;
}

/// What a typed read found.
#[derive(Debug, Clone, PartialEq)]
pub struct Read<R> {
    /// The provider id.
    pub id: String,
    /// The observed properties, normalized to the declared shape (see
    /// [`Observed::props`]).
    pub props: R,
    /// Outputs other resources can reference.
    pub outputs: Outputs,
}

/// What a typed read returns: the resource, or `None` when it does not exist.
pub type Found<R> = Result<Option<Read<R>>, ProviderError>;

/// What a typed read looks for (the arguments of [`Provider::read`], typed).
#[derive(Debug)]
pub struct Lookup<'a, R> {
    /// The id in state, or `None` to look the resource up by the deterministic name or
    /// tags in `desired` (adopting what an interrupted run made).
    pub id: Option<&'a str>,
    /// The declared properties.
    pub desired: &'a R,
    /// The last-applied properties, for attributes the API does not echo.
    pub prior: Option<&'a R>,
}

impl<R> Clone for Lookup<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Lookup<'_, R> {}

impl<'a, R> Lookup<'a, R> {
    /// A lookup by id (`None`: by name or tags) with the last-applied properties.
    pub fn new(id: Option<&'a str>, desired: &'a R, prior: Option<&'a R>) -> Self {
        Lookup { id, desired, prior }
    }
    /// The read right after an apply: by its id, the desired properties (now applied)
    /// as the prior ones.
    pub fn back(id: &'a str, desired: &'a R) -> Self {
        Lookup::new(Some(id), desired, Some(desired))
    }
    /// The id in state, else `fallback` (the deterministic name or id from `desired`).
    pub fn id_or<'b>(&self, fallback: &'b str) -> &'b str
    where
        'a: 'b,
    {
        self.id.unwrap_or(fallback)
    }
}

/// Where the outputs of a create or an update come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Known from the calls just made.
    Outputs(Outputs),
    /// Read the resource back (by its id, the desired properties as `prior`) and take
    /// that read's outputs; none when it finds nothing.
    ReadBack,
}

impl From<Outputs> for Applied {
    fn from(o: Outputs) -> Self {
        Applied::Outputs(o)
    }
}

/// What a typed create made.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The provider id.
    pub id: String,
    /// Its outputs.
    pub outputs: Applied,
}

impl Created {
    /// A resource whose outputs the create already knows.
    pub fn new(id: impl Into<String>, outputs: Outputs) -> Created {
        Created {
            id: id.into(),
            outputs: Applied::Outputs(outputs),
        }
    }
    /// A resource whose outputs come from reading it back.
    pub fn read_back(id: impl Into<String>) -> Created {
        Created {
            id: id.into(),
            outputs: Applied::ReadBack,
        }
    }
}

/// One resource kind's lifecycle over its typed properties. Every implementor is a
/// [`Provider`] through the generic adapter below; register it with [`Registry::add`].
#[async_trait]
pub trait ResourceProvider: Send + Sync + 'static {
    /// The declared resource type (its serialized form is the resource's properties).
    type Resource: Resource + Clone + Send + Sync;
    /// Dotted paths of the properties whose change forces a replacement (e.g.
    /// `name`, `spec.selector`); each must name a field of [`Self::Resource`]
    /// (checked at registration). By default the resource's own, the fields its
    /// `#[derive(Resource)]` marks `replace`.
    const REPLACE_PATHS: &'static [&'static str] = <Self::Resource as Resource>::REPLACE_PATHS;
    /// See [`Provider::create_before_delete`].
    fn create_before_delete(&self) -> bool {
        false
    }
    /// See [`Provider::update_changes_outputs`].
    fn update_changes_outputs(&self) -> bool {
        false
    }
    /// See [`Provider::read`]; `at` holds its three arguments, typed.
    async fn read(&self, at: Lookup<'_, Self::Resource>) -> Found<Self::Resource>;
    /// Creates the resource.
    async fn create(&self, desired: &Self::Resource) -> Result<Created, ProviderError>;
    /// Brings resource `id` from `observed` to `desired` in place. The default changes
    /// nothing and reports no outputs: right only for a kind whose every property
    /// forces replacement (an IAM policy attachment, a Lambda permission statement),
    /// which the engine never has anything to update in place for; every other
    /// provider overrides it.
    async fn update(
        &self,
        _id: &str,
        _observed: &Self::Resource,
        _desired: &Self::Resource,
    ) -> Result<Applied, ProviderError> {
        Ok(Outputs::new().into())
    }
    /// Deletes the resource (`last`: its last-applied properties) and waits until it
    /// is gone. Deleting something already gone succeeds.
    async fn delete(&self, id: &str, last: &Self::Resource) -> Result<(), ProviderError>;
}

/// Decodes JSON properties (`what`: desired, observed, prior, last-applied) into a
/// resource type; the error names the kind and the offending field.
pub fn decode<R: Resource>(v: &Value, what: &str) -> Result<R, ProviderError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("field `{path}`: ")
        };
        ProviderError::Props(format!("{} ({what}): {at}{}", R::KIND, e.into_inner()))
    })
}

/// Encodes a resource type into JSON properties.
pub fn encode<R: Resource>(r: &R) -> Result<Value, ProviderError> {
    serde_json::to_value(r)
        .map_err(|e| ProviderError::Props(format!("{}: cannot serialize: {e}", R::KIND)))
}

impl<R: Resource> Read<R> {
    fn erase(self) -> Result<Observed, ProviderError> {
        Ok(Observed {
            id: self.id,
            props: encode(&self.props)?,
            outputs: self.outputs,
        })
    }
}

/// The outputs of an apply: as given, or from a read right after it.
async fn finish<P: ResourceProvider>(
    p: &P,
    id: String,
    d: &P::Resource,
    desired: &Value,
    outputs: Applied,
) -> Result<Observed, ProviderError> {
    let now = match outputs {
        Applied::Outputs(outputs) => {
            return Ok(Observed {
                id,
                props: desired.clone(),
                outputs,
            });
        }
        Applied::ReadBack => ResourceProvider::read(p, Lookup::back(&id, d)).await?,
    };
    let now = now.map(Read::erase).transpose()?;
    Ok(Observed::applied(id, desired, now))
}

/// The adapter: every typed provider is an engine [`Provider`].
#[async_trait]
impl<P: ResourceProvider> Provider for P {
    fn replace_fields(&self) -> &'static [&'static str] {
        P::REPLACE_PATHS
    }
    fn create_before_delete(&self) -> bool {
        ResourceProvider::create_before_delete(self)
    }
    fn update_changes_outputs(&self) -> bool {
        ResourceProvider::update_changes_outputs(self)
    }
    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: P::Resource = decode(desired, "desired")?;
        let prior: Option<P::Resource> = prior.map(|p| decode(p, "prior")).transpose()?;
        let r = ResourceProvider::read(self, Lookup::new(id, &d, prior.as_ref())).await?;
        r.map(Read::erase).transpose()
    }
    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: P::Resource = decode(desired, "desired")?;
        let c = ResourceProvider::create(self, &d).await?;
        finish(self, c.id, &d, desired, c.outputs).await
    }
    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: P::Resource = decode(observed, "observed")?;
        let d: P::Resource = decode(desired, "desired")?;
        let a = ResourceProvider::update(self, id, &o, &d).await?;
        finish(self, id.to_string(), &d, desired, a).await
    }
    async fn delete(&self, id: &str, props: &Value) -> Result<(), ProviderError> {
        let last: P::Resource = decode(props, "last-applied")?;
        ResourceProvider::delete(self, id, &last).await
    }
}

/// Providers by kind.
#[derive(Default, Clone)]
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl Registry {
    /// Registers a provider for `kind`.
    pub fn register(&mut self, kind: &str, p: Arc<dyn Provider>) {
        self.providers.insert(kind.into(), p);
    }
    /// Registers a typed provider under its resource's kind.
    ///
    /// # Panics
    /// When one of its replace paths names no field of the resource type: such a path
    /// would never match a change.
    pub fn add<P: ResourceProvider>(&mut self, p: P) {
        let kind = <P::Resource as Resource>::KIND;
        if let Err(e) = check_paths::<P::Resource>(P::REPLACE_PATHS) {
            panic!("provider for {kind}: {e}");
        }
        self.register(kind, Arc::new(p));
    }
    /// The provider for `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(kind).cloned()
    }
    /// The registered kinds.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }
}

/// Deserializes resolved properties into a provider's typed view.
pub fn props<T: DeserializeOwned>(v: &Value) -> Result<T, ProviderError> {
    serde_json::from_value(v.clone()).map_err(|e| ProviderError::Props(e.to_string()))
}

/// Serializes a typed view back into JSON properties.
pub fn to_value<T: serde::Serialize>(t: &T) -> Result<Value, ProviderError> {
    serde_json::to_value(t).map_err(|e| ProviderError::Props(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use std::sync::Mutex;

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    struct Thing {
        name: String,
        size: i32,
        #[serde(default)]
        spec: Spec,
    }

    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    struct Spec {
        #[serde(default)]
        selector: BTreeMap<String, String>,
    }

    impl Resource for Thing {
        const KIND: &'static str = "test:Thing";
        fn validate(&self) -> Vec<String> {
            vec![]
        }
    }

    /// Records calls; its create asks for a read back. `BAD`: with a replace path
    /// that names no field.
    #[derive(Default)]
    struct Things<const BAD: bool = false> {
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl<const BAD: bool> ResourceProvider for Things<BAD> {
        type Resource = Thing;
        const REPLACE_PATHS: &'static [&'static str] = if BAD {
            &["name", "spec.selectr"]
        } else {
            &["name", "spec.selector", "spec.selector.app"]
        };
        async fn read(&self, at: Lookup<'_, Thing>) -> Found<Thing> {
            let (id, d) = (at.id, at.desired);
            self.calls
                .lock()
                .unwrap()
                .push(format!("read {id:?} prior={}", at.prior.is_some()));
            let outputs = serde_json::from_value(json!({ "size": d.size })).unwrap();
            Ok(id.map(|id| Read {
                id: id.into(),
                props: d.clone(),
                outputs,
            }))
        }
        async fn create(&self, d: &Thing) -> Result<Created, ProviderError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("create {}", d.name));
            Ok(Created::read_back(&d.name))
        }
        async fn update(&self, id: &str, o: &Thing, d: &Thing) -> Result<Applied, ProviderError> {
            let call = format!("update {id} {} -> {}", o.size, d.size);
            self.calls.lock().unwrap().push(call);
            Ok(Outputs::new().into())
        }
        async fn delete(&self, id: &str, last: &Thing) -> Result<(), ProviderError> {
            let call = format!("delete {id} {}", last.name);
            self.calls.lock().unwrap().push(call);
            Ok(())
        }
    }

    #[tokio::test]
    async fn adapter_names_the_kind_and_the_bad_field() {
        let p = Things::<false>::default();
        let bad = json!({ "name": "a", "size": "big" });
        let e = Provider::create(&p, &bad).await.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ProviderError::Props(_)), "{e:?}");
        assert!(msg.contains("test:Thing"), "{msg}");
        assert!(msg.contains("field `size`"), "{msg}");
        assert!(msg.contains("(desired)"), "{msg}");

        let nested = json!({ "name": "a", "size": 1, "spec": { "selector": { "app": 7 } } });
        let e = Provider::read(&p, None, &nested, None).await.unwrap_err();
        assert!(e.to_string().contains("field `spec.selector.app`"), "{e}");

        let missing = json!({ "size": 1 });
        let good = json!({ "name": "a", "size": 1 });
        let e = Provider::update(&p, "a", &missing, &good)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("(observed)") && msg.contains("missing field `name`"),
            "{msg}"
        );
        assert!(
            p.calls.lock().unwrap().is_empty(),
            "nothing called on bad props"
        );
    }

    #[tokio::test]
    async fn adapter_reads_back_after_apply_and_erases_types() {
        let p = Things::<false>::default();
        let desired = json!({ "name": "a", "size": 2, "spec": { "selector": {} } });
        let made = Provider::create(&p, &desired).await.unwrap();
        assert_eq!(made.id, "a");
        assert_eq!(made.props, desired);
        assert_eq!(made.outputs["size"], 2, "outputs from the read back");

        let obs = Provider::read(&p, Some("a"), &desired, Some(&desired))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(obs.props, desired);

        let up = Provider::update(&p, "a", &desired, &json!({ "name": "a", "size": 3 }))
            .await
            .unwrap();
        assert_eq!(up.id, "a");
        assert!(up.outputs.is_empty());
        Provider::delete(&p, "a", &desired).await.unwrap();
        assert_eq!(
            *p.calls.lock().unwrap(),
            [
                "create a",
                "read Some(\"a\") prior=true",
                "read Some(\"a\") prior=true",
                "update a 2 -> 3",
                "delete a a",
            ]
        );
    }

    #[test]
    fn registry_keys_typed_providers_by_kind() {
        let mut reg = Registry::default();
        reg.add(Things::<false>::default());
        assert!(reg.get("test:Thing").is_some());
        let p = reg.get("test:Thing").unwrap();
        assert_eq!(
            p.replace_fields(),
            ["name", "spec.selector", "spec.selector.app"]
        );
    }

    #[test]
    #[should_panic(expected = "provider for test:Thing: replace path(s) [\"spec.selectr\"]")]
    fn registry_rejects_a_replace_path_that_names_no_field() {
        Registry::default().add(Things::<true>::default());
    }
}
