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
