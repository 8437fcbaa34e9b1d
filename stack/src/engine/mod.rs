//! The engine: declarations ([`Stack`]), the dependency graph, plan, apply and state.

pub mod apply;
mod error;
pub mod events;
pub mod graph;
pub mod plan;
pub mod state;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::marker::PhantomData;

pub use error::EngineError;
/// `#[derive(Resource)]` (a macro of the same name as the trait, as with serde's).
pub use stack_derive::Resource;

/// The JSON key marking a reference to another resource's output inside properties.
pub const REF_KEY: &str = "$ref";
/// The value shown for an output that is only known once its resource is applied.
pub const UNKNOWN: &str = "(known after apply)";

/// A value produced by a resource once it exists (ARN, id, endpoint). Using it as an
/// input of another resource creates the dependency edge between the two.
#[derive(Debug, PartialEq, Eq)]
pub struct Output<T> {
    resource: String,
    key: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Output<T> {
    fn clone(&self) -> Self {
        Output {
            resource: self.resource.clone(),
            key: self.key.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> Output<T> {
    /// The logical name of the producing resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }
    /// The output key on that resource.
    pub fn key(&self) -> &str {
        &self.key
    }
    fn to_ref(&self) -> Value {
        json!({ REF_KEY: { "resource": self.resource, "output": self.key } })
    }
}

/// An input property: a literal value or another resource's [`Output`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input<T> {
    /// A literal.
    Value(T),
    /// A reference resolved at apply time.
    Ref(Output<T>),
}

impl<T> Input<T> {
    /// The literal value (after resolution every input is a literal).
    pub fn value(&self) -> Option<&T> {
        match self {
            Input::Value(v) => Some(v),
            Input::Ref(_) => None,
        }
    }
}

impl<T: Serialize> Serialize for Input<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Input::Value(v) => v.serialize(s),
            Input::Ref(o) => o.to_ref().serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Input<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Input::Value)
    }
}

impl From<&str> for Input<String> {
    fn from(s: &str) -> Self {
        Input::Value(s.to_string())
    }
}
impl From<String> for Input<String> {
    fn from(s: String) -> Self {
        Input::Value(s)
    }
}
impl<T> From<Output<T>> for Input<T> {
    fn from(o: Output<T>) -> Self {
        Input::Ref(o)
    }
}
impl<T> From<&Output<T>> for Input<T> {
    fn from(o: &Output<T>) -> Self {
        Input::Ref(o.clone())
    }
}

impl Input<String> {
    /// The string value; `UNKNOWN` for an unresolved reference.
    pub fn as_str(&self) -> &str {
        match self {
            Input::Value(v) => v,
            Input::Ref(_) => UNKNOWN,
        }
    }
}

/// A declarable resource type. The serialized value is the resource's desired
/// properties; a provider for [`Resource::KIND`] knows how to realize them.
///
/// Usually derived (`#[derive(Resource)]`, see [`stack_derive`]): the kind on the
/// struct, checks and replacement on its fields.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use stack::engine::Resource;
///
/// #[derive(Serialize, Deserialize, Resource)]
/// #[resource(kind = "test:Thing")]
/// struct Thing {
///     #[resource(replace, len = 1..=8)]
///     name: String,
/// }
/// assert_eq!(Thing::REPLACE_PATHS, ["name"]);
/// let long = Thing { name: "much too long".into() };
/// assert_eq!(long.validate(), ["name `much too long` must be 1-8 chars"]);
/// ```
///
/// An attribute it does not know is a compile error (here `lenght`):
///
/// ```compile_fail
/// use serde::{Deserialize, Serialize};
/// use stack::engine::Resource;
///
/// #[derive(Serialize, Deserialize, Resource)]
/// #[resource(kind = "test:Thing")]
/// struct Thing {
///     #[resource(replace, lenght = 1..=8)]
///     name: String,
/// }
/// ```
pub trait Resource: Serialize + DeserializeOwned {
    /// The kind, e.g. `aws:lambda:Function`.
    const KIND: &'static str;
    /// Whether the kind supports tags (the engine then adds the stack's tags to its
    /// `tags` property).
    const TAGGABLE: bool = true;
    /// Dotted paths of the properties whose change forces a replacement (delete and
    /// create), e.g. `name`: what the provider's
    /// [`ResourceProvider::REPLACE_PATHS`](crate::providers::ResourceProvider::REPLACE_PATHS)
    /// defaults to.
    const REPLACE_PATHS: &'static [&'static str] = &[];
    /// Checks the properties without any API call; each problem is one message
    /// (see [`Checks`](crate::providers::Checks)). None by default.
    fn validate(&self) -> Vec<String> {
        vec![]
    }
}

/// A handle to a declared resource, giving typed access to its outputs.
#[derive(Debug)]
pub struct Handle<R> {
    name: String,
    _r: PhantomData<fn() -> R>,
}

impl<R> Clone for Handle<R> {
    fn clone(&self) -> Self {
        Handle {
            name: self.name.clone(),
            _r: PhantomData,
        }
    }
}

impl<R> Handle<R> {
    /// The logical name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// A named output of this resource.
    pub fn output<T>(&self, key: &str) -> Output<T> {
        Output {
            resource: self.name.clone(),
            key: key.to_string(),
            _t: PhantomData,
        }
    }
}

/// One declared resource, type-erased.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceDecl {
    /// Logical name, unique in the stack.
    pub name: String,
    /// Resource kind.
    pub kind: String,
    /// Desired properties; references appear as `{"$ref": {...}}`.
    pub props: Value,
    /// Explicit dependencies where no data flows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The resource this one exists inside (a Kubernetes object's cluster): when that
    /// is replaced, this one is gone with it, so it is replaced too: deleted first
    /// (a Service's load balancer with it), created again in the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lives_in: Option<String>,
}

impl ResourceDecl {
    /// Every resource this one depends on: references plus explicit dependencies.
    pub fn deps(&self) -> Vec<String> {
        let mut out = self.depends_on.clone();
        collect_refs(&self.props, &mut out);
        out.sort();
        out.dedup();
        out
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get(REF_KEY) {
                if let Some(res) = r.get("resource").and_then(Value::as_str) {
                    out.push(res.to_string());
                }
            } else {
                m.values().for_each(|v| collect_refs(v, out));
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Replaces references with the producing resource's outputs; unknown ones become
/// [`UNKNOWN`]. Returns whether everything was known.
pub fn resolve(v: &Value, outputs: &dyn Fn(&str, &str) -> Option<Value>) -> (Value, bool) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get(REF_KEY) {
                let res = r
                    .get("resource")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let key = r.get("output").and_then(Value::as_str).unwrap_or_default();
                match outputs(res, key) {
                    Some(v) => (v, true),
                    None => (Value::String(UNKNOWN.into()), false),
                }
            } else {
                let mut all = true;
                let mut out = Map::new();
                for (k, v) in m {
                    let (v, known) = resolve(v, outputs);
                    all &= known;
                    out.insert(k.clone(), v);
                }
                (Value::Object(out), all)
            }
        }
        Value::Array(a) => {
            let mut all = true;
            let out = a
                .iter()
                .map(|v| {
                    let (v, known) = resolve(v, outputs);
                    all &= known;
                    v
                })
                .collect();
            (Value::Array(out), all)
        }
        other => (other.clone(), true),
    }
}

/// A stack: the set of declared resources and exported outputs.
#[derive(Debug, Clone, Serialize)]
pub struct Stack {
    /// The stack name (also a tag on every taggable resource).
    pub name: String,
    /// Declared resources in declaration order.
    pub resources: Vec<ResourceDecl>,
    /// Exported outputs: name → reference.
    pub exports: BTreeMap<String, Value>,
    #[serde(skip)]
    errors: Vec<String>,
}

/// The tag keys the engine puts on every taggable resource.
pub const TAG_STACK: &str = "stack";
/// See [`TAG_STACK`].
pub const TAG_MANAGED_BY: &str = "managed-by";
/// The logical name of the resource, used to adopt resources whose id AWS assigns.
pub const TAG_RESOURCE: &str = "stack-resource";

impl Stack {
    /// An empty stack.
    pub fn new(name: &str) -> Self {
        let mut errors = Vec::new();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errors.push(format!(
                "stack name `{name}` must be non-empty [A-Za-z0-9_-]"
            ));
        }
        Stack {
            name: name.into(),
            resources: vec![],
            exports: BTreeMap::new(),
            errors,
        }
    }

    /// Adds a resource under a unique logical name and returns its handle.
    pub fn add<R: Resource>(&mut self, name: &str, r: R) -> Handle<R> {
        for e in r.validate() {
            self.errors.push(format!("{} `{name}`: {e}", R::KIND));
        }
        if self.resources.iter().any(|d| d.name == name) {
            self.errors
                .push(format!("duplicate resource name `{name}`"));
        }
        let mut props = serde_json::to_value(&r).unwrap_or_else(|e| {
            self.errors
                .push(format!("{} `{name}`: cannot serialize: {e}", R::KIND));
            Value::Null
        });
        if R::TAGGABLE
            && let Value::Object(m) = &mut props
        {
            let tags = m.entry("tags").or_insert_with(|| json!({}));
            if let Value::Object(t) = tags {
                t.insert(TAG_STACK.into(), self.name.clone().into());
                t.insert(TAG_MANAGED_BY.into(), "stack".into());
                t.insert(TAG_RESOURCE.into(), name.into());
            }
        }
        self.resources.push(ResourceDecl {
            name: name.into(),
            kind: R::KIND.into(),
            props,
            depends_on: vec![],
            lives_in: None,
        });
        Handle {
            name: name.into(),
            _r: PhantomData,
        }
    }

    /// Declares that `who` must be applied after `on` although no data flows.
    pub fn depends_on<A, B>(&mut self, who: &Handle<A>, on: &Handle<B>) {
        if let Some(d) = self.resources.iter_mut().find(|d| d.name == who.name) {
            d.depends_on.push(on.name.clone());
        }
    }

    /// Declares that `who` exists inside `container` (see [`ResourceDecl::lives_in`]);
    /// also a dependency.
    pub fn lives_in<A, B>(&mut self, who: &Handle<A>, container: &Handle<B>) {
        if let Some(d) = self.resources.iter_mut().find(|d| d.name == who.name) {
            d.depends_on.push(container.name.clone());
            d.lives_in = Some(container.name.clone());
        }
    }

    /// Exports an output under a stack-level name (`stack outputs NAME`).
    pub fn export<T>(&mut self, name: &str, o: &Output<T>) {
        self.exports.insert(name.into(), o.to_ref());
    }

    /// Records a configuration problem found while declaring.
    pub fn invalid(&mut self, msg: impl Into<String>) {
        self.errors.push(msg.into());
    }

    /// Validates everything that can be checked without an API call: properties,
    /// references and cycles.
    pub fn validate(&self) -> Result<(), EngineError> {
        if !self.errors.is_empty() {
            return Err(EngineError::Invalid(self.errors.clone()));
        }
        graph::order(&self.resources).map(|_| ())
    }

    /// The declaration of a resource by name.
    pub fn get(&self, name: &str) -> Option<&ResourceDecl> {
        self.resources.iter().find(|d| d.name == name)
    }
}
