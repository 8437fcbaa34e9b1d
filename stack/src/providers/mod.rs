//! Providers: one per resource kind, each implementing [`Provider`] (read, create,
//! update, delete, plus which properties force a replacement).
//!
//! `aws/` talks to AWS through the AWS SDK for Rust; `k8s/` applies Kubernetes objects
//! (Namespace, Deployment, Service, HPA, PDB) through kube-rs server-side apply.

pub mod aws;
pub mod k8s;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::ProviderError;

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

/// One resource kind's lifecycle.
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
    /// Brings an existing resource from `observed` to `desired` in place.
    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError>;
    /// Deletes the resource and waits until it is gone. Deleting something already
    /// gone succeeds.
    async fn delete(&self, id: &str, props: &Value) -> Result<(), ProviderError>;
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
    /// The provider for `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(kind).cloned()
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
