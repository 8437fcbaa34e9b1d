//! Declarative property checks for [`Resource::validate`](crate::engine::Resource):
//! each check names the field and the bad value in its message, so a `validate` reads
//! as a list of rules.
//!
//! ```text
//! fn validate(&self) -> Vec<String> {
//!     Checks::new()
//!         .len("name", &self.name, 1..=128)
//!         .one_of("protocol_type", &self.protocol_type, &["HTTP", "WEBSOCKET"])
//!         .done()
//! }
//! ```

use std::fmt::Display;
use std::ops::RangeInclusive;

/// A set of allowed characters: a test and how messages spell it.
#[derive(Debug, Clone, Copy)]
pub struct Charset {
    /// How a message names the set, e.g. `[A-Za-z0-9_-]`.
    pub name: &'static str,
    /// Whether a character belongs to the set.
    pub allows: fn(char) -> bool,
}

impl Charset {
    /// `[A-Za-z0-9_-]`: Lambda function names, EKS cluster names, statement ids.
    pub const WORD: Charset = Charset {
        name: "[A-Za-z0-9_-]",
        allows: |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
    };

    fn all(&self, s: &str) -> bool {
        s.chars().all(self.allows)
    }
}

/// The problems found so far, one message each.
#[derive(Debug, Default)]
#[must_use = "call `done` to get the problems"]
pub struct Checks(Vec<String>);

impl Checks {
    /// No problems yet.
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Adds `problem()` unless `ok`.
    pub fn require(mut self, ok: bool, problem: impl FnOnce() -> String) -> Checks {
        if !ok {
            self.0.push(problem());
        }
        self
    }

    /// `value` is `lo`-`hi` bytes long: "name `x` must be 1-128 chars".
    pub fn len(self, field: &str, value: &str, len: RangeInclusive<usize>) -> Checks {
        let ok = len.contains(&value.len());
        self.require(ok, || {
            format!(
                "{field} `{value}` must be {}-{} chars",
                len.start(),
                len.end()
            )
        })
    }

    /// `value` is `lo`-`hi` characters of `set`: "name `x` must be 1-64 chars of
    /// [A-Za-z0-9_-]".
    pub fn chars(
        self,
        field: &str,
        value: &str,
        len: RangeInclusive<usize>,
        set: Charset,
    ) -> Checks {
        let ok = len.contains(&value.len()) && set.all(value);
        self.require(ok, || {
            let (lo, hi) = (len.start(), len.end());
            format!("{field} `{value}` must be {lo}-{hi} chars of {}", set.name)
        })
    }

    /// `value` is non-empty and made of `set`: "statement_id `x` must be non-empty
    /// [A-Za-z0-9_-]".
    pub fn word(self, field: &str, value: &str, set: Charset) -> Checks {
        let ok = !value.is_empty() && set.all(value);
        self.require(ok, || {
            format!("{field} `{value}` must be non-empty {}", set.name)
        })
    }

    /// `value` is not empty: "availability_zone must not be empty".
    pub fn non_empty(self, field: &str, value: &str) -> Checks {
        self.require(!value.is_empty(), || format!("{field} must not be empty"))
    }

    /// `value` is one of `allowed`: "protocol_type `x` must be HTTP or WEBSOCKET".
    pub fn one_of(self, field: &str, value: &str, allowed: &[&str]) -> Checks {
        self.require(allowed.contains(&value), || {
            format!("{field} `{value}` must be {}", alternatives(allowed))
        })
    }

    /// `value` lies in `range`: "memory_mb 1 must be between 128 and 10240".
    pub fn within<T: PartialOrd + Display>(
        self,
        field: &str,
        value: T,
        range: RangeInclusive<T>,
    ) -> Checks {
        self.require(range.contains(&value), || {
            let (lo, hi) = (range.start(), range.end());
            format!("{field} {value} must be between {lo} and {hi}")
        })
    }

    /// The problems, in the order checked.
    pub fn done(self) -> Vec<String> {
        self.0
    }
}

/// `a`, `a or b`, `a, b or c`.
fn alternatives(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failed_check_names_the_field_and_the_value() {
        let got = Checks::new()
            .len("name", "", 1..=128)
            .one_of("mode", "X", &["API", "API_AND_CONFIG_MAP", "CONFIG_MAP"])
            .within("memory_mb", 100_000, 128..=10240)
            .chars("name", "a b", 1..=64, Charset::WORD)
            .word("statement_id", "", Charset::WORD)
            .non_empty("availability_zone", "")
            .require(false, || "custom".into())
            .done();
        assert_eq!(
            got,
            [
                "name `` must be 1-128 chars",
                "mode `X` must be API, API_AND_CONFIG_MAP or CONFIG_MAP",
                "memory_mb 100000 must be between 128 and 10240",
                "name `a b` must be 1-64 chars of [A-Za-z0-9_-]",
                "statement_id `` must be non-empty [A-Za-z0-9_-]",
                "availability_zone must not be empty",
                "custom",
            ]
        );
    }

    #[test]
    fn passing_checks_report_nothing() {
        let got = Checks::new()
            .len("name", "a", 1..=128)
            .one_of("t", "HTTP", &["HTTP", "WEBSOCKET"])
            .within("timeout_s", 900, 1..=900)
            .chars("name", "a_b-1", 1..=64, Charset::WORD)
            .word("sid", "x", Charset::WORD)
            .non_empty("az", "us-east-1a")
            .done();
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(alternatives(&["x86_64", "arm64"]), "x86_64 or arm64");
    }
}

/// `#[derive(Resource)]`: each field rule is the `Checks` call of the same name.
#[cfg(test)]
mod derive_tests {
    use super::*;
    use crate::engine::Resource;
    use serde::{Deserialize, Serialize};

    const LOWER: Charset = Charset {
        name: "[a-z]",
        allows: |c| c.is_ascii_lowercase(),
    };

    /// One field per rule, two of them forcing replacement, and a hook.
    #[derive(Debug, Serialize, Deserialize, Resource)]
    #[resource(kind = "test:Everything", checks = Self::checks)]
    struct Everything {
        #[resource(replace, len = 1..=128)]
        name: String,
        #[resource(chars(1..=64, Charset::WORD), label = "function name")]
        function: String,
        #[resource(word(LOWER))]
        statement_id: String,
        #[resource(non_empty)]
        availability_zone: String,
        #[resource(one_of("API", "API_AND_CONFIG_MAP", "CONFIG_MAP"), replace)]
        mode: String,
        #[resource(within = 128..=10240)]
        memory_mb: i32,
        min: i32,
        max: i32,
    }

    impl Everything {
        fn checks(&self, c: Checks) -> Checks {
            c.require(self.min <= self.max, || "min must not exceed max".into())
        }
    }

    fn everything(bad: bool) -> Everything {
        let pick = |bad_value: &str, good: &str| if bad { bad_value } else { good }.to_string();
        Everything {
            name: pick("", "api"),
            function: pick("a b", "a_b-1"),
            statement_id: pick("A", "sid"),
            availability_zone: pick("", "us-east-1a"),
            mode: pick("X", "API"),
            memory_mb: if bad { 100_000 } else { 1024 },
            min: if bad { 2 } else { 1 },
            max: 1,
        }
    }

    #[test]
    fn field_rules_run_in_field_order_then_the_hook() {
        assert_eq!(
            everything(true).validate(),
            [
                "name `` must be 1-128 chars",
                "function name `a b` must be 1-64 chars of [A-Za-z0-9_-]",
                "statement_id `A` must be non-empty [a-z]",
                "availability_zone must not be empty",
                "mode `X` must be API, API_AND_CONFIG_MAP or CONFIG_MAP",
                "memory_mb 100000 must be between 128 and 10240",
                "min must not exceed max",
            ]
        );
        assert!(everything(false).validate().is_empty());
    }

    #[test]
    fn kind_replace_paths_and_tagging_come_from_the_declaration() {
        assert_eq!(Everything::KIND, "test:Everything");
        assert_eq!(Everything::REPLACE_PATHS, ["name", "mode"]);
        const { assert!(!Everything::TAGGABLE, "no tags field") };
        // A replace path the derive makes names a field of the serialized shape.
        assert!(crate::providers::check_paths::<Everything>(Everything::REPLACE_PATHS).is_ok());
    }

    /// Nothing to check: the trait's `validate` (no problems); taggable by its field.
    #[derive(Debug, Serialize, Deserialize, Resource)]
    #[resource(kind = "test:Tagged")]
    struct Tagged {
        #[serde(default)]
        tags: std::collections::BTreeMap<String, String>,
    }

    #[test]
    fn a_tags_field_makes_a_kind_taggable() {
        let t = Tagged {
            tags: Default::default(),
        };
        const { assert!(Tagged::TAGGABLE) };
        assert!(Tagged::REPLACE_PATHS.is_empty());
        assert!(t.validate().is_empty());
    }
}
