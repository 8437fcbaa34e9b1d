//! The serialized field paths of a resource type, found by walking its `Deserialize`
//! impl with a tracing deserializer (no sample value needed): used to check that a
//! provider's replace paths name real fields.

use serde::de::value::{Error, StrDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess,
    SeqAccess, VariantAccess, Visitor,
};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A value with named fields below it (a struct).
    Fields,
    /// A value without fields (a scalar, a list, an enum).
    Leaf,
    /// A map or free-form JSON: any key below it is a valid path.
    Open,
}

/// Every dotted path of `T`'s serialized shape, with what it names.
pub fn paths<T: DeserializeOwned>() -> BTreeMap<String, Shape> {
    let out = RefCell::new(BTreeMap::new());
    // A type whose Deserialize rejects the traced placeholder values still has its
    // fields recorded up to that point.
    let _ = T::deserialize(Tracer {
        path: Some(""),
        out: &out,
    });
    out.into_inner()
}

/// Checks that every path in `wanted` names a field of `T` (nested paths with dots);
/// the error lists the offending paths and the known ones.
pub fn check_paths<T: DeserializeOwned>(wanted: &[&str]) -> Result<(), String> {
    let known = paths::<T>();
    let found = |p: &str| {
        known.contains_key(p)
            || p.match_indices('.')
                .any(|(i, _)| known.get(&p[..i]) == Some(&Shape::Open))
    };
    let bad: Vec<&str> = wanted.iter().copied().filter(|p| !found(p)).collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "replace path(s) {bad:?} name no field; known: {:?}",
            known.keys().collect::<Vec<_>>()
        ))
    }
}

#[derive(Clone, Copy)]
struct Tracer<'a> {
    /// The path of the value (`""` at the root); `None` below an enum or in a list,
    /// where nothing is a path.
    path: Option<&'a str>,
    out: &'a RefCell<BTreeMap<String, Shape>>,
}

impl Tracer<'_> {
    fn mark(&self, s: Shape) {
        if let Some(p) = self.path.filter(|p| !p.is_empty()) {
            self.out.borrow_mut().insert(p.to_string(), s);
        }
    }
}

struct Fields<'a> {
    t: Tracer<'a>,
    fields: std::slice::Iter<'static, &'static str>,
    current: String,
    record: bool,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, k: K) -> Result<Option<K::Value>, Error> {
        let Some(f) = self.fields.next() else {
            return Ok(None);
        };
        self.current = match self.t.path.filter(|p| !p.is_empty()) {
            Some(p) => format!("{p}.{f}"),
            None => (*f).to_string(),
        };
        let key: StrDeserializer<'_, Error> = f.into_deserializer();
        k.deserialize(key).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, v: V) -> Result<V::Value, Error> {
        let path = self.current.clone();
        let t = Tracer {
            path: self.record.then_some(path.as_str()),
            out: self.t.out,
        };
        if self.record {
            t.mark(Shape::Leaf);
        }
        v.deserialize(t)
    }
}

struct Items<'a> {
    t: Tracer<'a>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        s: S,
    ) -> Result<Option<S::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        s.deserialize(Tracer {
            path: None,
            out: self.t.out,
        })
        .map(Some)
    }
}

struct FirstVariant<'a> {
    t: Tracer<'a>,
    name: &'static str,
}

impl<'de, 'a> EnumAccess<'de> for FirstVariant<'a> {
    type Error = Error;
    type Variant = Tracer<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, v: V) -> Result<(V::Value, Tracer<'a>), Error> {
        let key: StrDeserializer<'_, Error> = self.name.into_deserializer();
        Ok((v.deserialize(key)?, self.t))
    }
}

impl<'de> VariantAccess<'de> for Tracer<'_> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, s: T) -> Result<T::Value, Error> {
        s.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Error> {
        v.visit_seq(Items { t: self, left: len })
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_map(Fields {
            t: self,
            fields: fields.iter(),
            current: String::new(),
            record: false,
        })
    }
}

macro_rules! leaf {
    ($($m:ident => $visit:ident($($val:expr)?)),* $(,)?) => {$(
        fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.$visit($($val)?)
        }
    )*};
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    // Free-form JSON (`serde_json::Value`) and anything else self-describing.
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.mark(Shape::Open);
        v.visit_unit()
    }

    leaf! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0),
        deserialize_i16 => visit_i64(0),
        deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u64(0),
        deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f64(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('a'),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""),
        deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_seq(Items { t: self, left: 0 })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Error> {
        v.visit_seq(Items { t: self, left: len })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_seq(Items { t: self, left: len })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.mark(Shape::Open);
        v.visit_map(Fields {
            t: self,
            fields: [].iter(),
            current: String::new(),
            record: false,
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.mark(Shape::Fields);
        v.visit_map(Fields {
            t: self,
            fields: fields.iter(),
            current: String::new(),
            record: self.path.is_some(),
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.mark(Shape::Leaf);
        let Some(name) = variants.first() else {
            return Err(de::Error::custom("enum without variants"));
        };
        v.visit_enum(FirstVariant {
            t: Tracer {
                path: None,
                out: self.out,
            },
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        selector: BTreeMap<String, String>,
        replicas: i32,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Kind {
        A { x: String },
        B,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        spec: Inner,
        maybe: Option<Inner>,
        kind: Kind,
        doc: serde_json::Value,
        list: Vec<Inner>,
        #[serde(rename = "renamed_field", default)]
        renamed: bool,
    }

    #[test]
    fn paths_follow_the_serialized_shape() {
        let p = paths::<Outer>();
        assert_eq!(p.get("name"), Some(&Shape::Leaf));
        assert_eq!(p.get("spec"), Some(&Shape::Fields));
        assert_eq!(p.get("spec.selector"), Some(&Shape::Open));
        assert_eq!(p.get("spec.replicas"), Some(&Shape::Leaf));
        assert_eq!(p.get("maybe.replicas"), Some(&Shape::Leaf));
        assert_eq!(p.get("kind"), Some(&Shape::Leaf));
        assert!(!p.contains_key("kind.x") && !p.contains_key("x"));
        assert_eq!(p.get("doc"), Some(&Shape::Open));
        assert_eq!(p.get("list"), Some(&Shape::Leaf));
        assert!(p.contains_key("renamed_field") && !p.contains_key("renamed"));
    }

    #[test]
    fn replace_paths_are_checked() {
        assert!(check_paths::<Outer>(&["name", "spec.selector", "spec.replicas"]).is_ok());
        // Below a map or free-form JSON any key is a path.
        assert!(check_paths::<Outer>(&["spec.selector.app", "doc.Statement"]).is_ok());
        let e = check_paths::<Outer>(&["nmae", "spec.replica", "name.x"]).unwrap_err();
        assert!(e.contains("\"nmae\""), "{e}");
        assert!(e.contains("\"spec.replica\""), "{e}");
        assert!(e.contains("\"name.x\""), "{e}");
    }
}
