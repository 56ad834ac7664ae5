//! Limit definitions in Limitador's limits-file format.
//!
//! A limits file is a YAML list; each entry is one fixed-window limit:
//!
//! ```yaml
//! - namespace: checkout            # the RLS `domain` this limit belongs to
//!   max_value: 100                 # hits allowed per window
//!   seconds: 60                    # window length
//!   name: per-user                 # optional; reported as `current_limit.name`
//!   conditions:                    # CEL predicates, all must hold (may be empty)
//!     - "descriptors[0]['generic_key'] == 'checkout'"
//!   variables:                     # CEL expressions: one counter per distinct value
//!     - "descriptors[1]['user']"   # (may be empty: one counter for the limit)
//! ```
//!
//! `descriptors` is the request's descriptor list, each descriptor a map from entry key to
//! value, exactly as Limitador (0.14, CEL conditions) binds it. A limit applies to a request
//! when every condition evaluates to `true` and every variable resolves to a value; a condition
//! or variable that refers to a missing descriptor or key (or fails to evaluate at all) makes
//! the limit not apply. `conditions` and `variables` are required, as in Limitador, so a file
//! written for this server loads in Limitador unchanged (and vice versa). `id` is accepted like
//! Limitador's.
//!
//! Loading validates everything once ([`Limits::from_yaml`]): unknown fields, empty namespace,
//! `seconds: 0`, CEL that does not parse, conditions on Limitador's `limit.*` binding (not
//! supported here), and two limits with the same identity (namespace, seconds, conditions and
//! variables — Limitador would silently merge them into one counter) are errors naming the
//! limit by its position.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use limitador::limit::{Expression, Limit, Predicate};
use serde::Deserialize;

/// Why a limits file was rejected. Limits are numbered from 0 in file order.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not YAML, not a list, a missing or unknown field, or a wrong type.
    #[error("limits file: {0}")]
    Yaml(#[from] serde_norway::Error),
    /// A field of one limit is invalid.
    #[error("limit #{index}: {field}: {reason}")]
    Invalid {
        /// Position of the limit in the file.
        index: usize,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Two limits would share one counter.
    #[error(
        "limits #{first} and #{second} have the same namespace, seconds, conditions and variables (they would share one counter)"
    )]
    Duplicate {
        /// The earlier limit.
        first: usize,
        /// The later limit.
        second: usize,
    },
}

/// One limit as written in the file (phase one of loading).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    #[serde(default)]
    id: Option<String>,
    namespace: String,
    max_value: u64,
    seconds: u64,
    #[serde(default)]
    name: Option<String>,
    conditions: Vec<String>,
    variables: Vec<String>,
}

/// A validated limit, ready to be matched against requests.
#[derive(Debug)]
pub struct LimitDef {
    /// The limitador limit: its identity keys the counters (in memory and in Redis).
    pub(crate) limit: Arc<Limit>,
    /// The parsed conditions, evaluated here rather than by `Limit::applies`, which panics
    /// when a condition fails to evaluate (e.g. `descriptors[1]` of a one-descriptor request).
    pub(crate) conditions: Vec<Predicate>,
    /// Which request descriptors (by index) this limit reads; empty = none (it applies to the
    /// request as a whole). Decides which `DescriptorStatus` reports it.
    pub(crate) descriptors: BTreeSet<usize>,
    /// Position in the file.
    pub(crate) index: usize,
}

impl LimitDef {
    /// The namespace (RLS domain).
    pub fn namespace(&self) -> &str {
        self.limit.namespace().as_ref()
    }

    /// Hits allowed per window.
    pub fn max_value(&self) -> u64 {
        self.limit.max_value()
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.limit.seconds())
    }

    /// The optional name.
    pub fn name(&self) -> Option<&str> {
        self.limit.name()
    }

    /// Position in the limits file.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// A validated set of limits, by namespace.
#[derive(Debug, Default, Clone)]
pub struct Limits {
    all: Vec<Arc<LimitDef>>,
    by_namespace: HashMap<String, Vec<Arc<LimitDef>>>,
}

impl Limits {
    /// No limits at all: every request is answered `OK`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses and validates a Limitador limits file's text.
    ///
    /// # Errors
    ///
    /// See [`LimitsError`].
    pub fn from_yaml(text: &str) -> Result<Self, LimitsError> {
        // An empty file (or one holding only comments) is YAML null: no limits.
        let raw: Option<Vec<RawLimit>> = serde_norway::from_str(text)?;
        let mut limits = Self::default();
        for (index, raw) in raw.unwrap_or_default().into_iter().enumerate() {
            let def = LimitDef::try_from_raw(index, raw)?;
            if let Some(first) = limits.all.iter().find(|d| *d.limit == *def.limit) {
                return Err(LimitsError::Duplicate {
                    first: first.index,
                    second: index,
                });
            }
            let def = Arc::new(def);
            limits
                .by_namespace
                .entry(def.namespace().to_owned())
                .or_default()
                .push(Arc::clone(&def));
            limits.all.push(def);
        }
        Ok(limits)
    }

    /// Reads and validates a limits file.
    ///
    /// # Errors
    ///
    /// See [`LimitsError`].
    pub fn from_file(path: &Path) -> Result<Self, LimitsError> {
        let text = std::fs::read_to_string(path).map_err(|source| LimitsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Every limit, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &LimitDef> {
        self.all.iter().map(AsRef::as_ref)
    }

    /// How many limits there are.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The limits of one namespace (empty for an unknown one).
    pub(crate) fn namespace(&self, namespace: &str) -> &[Arc<LimitDef>] {
        self.by_namespace
            .get(namespace)
            .map_or(&[][..], Vec::as_slice)
    }
}

// === impl LimitDef ===

impl LimitDef {
    fn try_from_raw(index: usize, raw: RawLimit) -> Result<Self, LimitsError> {
        let invalid = |field: &'static str, reason: String| LimitsError::Invalid {
            index,
            field,
            reason,
        };
        if raw.namespace.is_empty() {
            return Err(invalid("namespace", "must not be empty".into()));
        }
        if raw.seconds == 0 {
            return Err(invalid("seconds", "must be at least 1".into()));
        }
        let mut conditions = Vec::with_capacity(raw.conditions.len());
        for source in &raw.conditions {
            let expression =
                Expression::parse(source).map_err(|e| invalid("conditions", e.to_string()))?;
            if expression.variables().iter().any(|v| v == "limit") {
                return Err(invalid(
                    "conditions",
                    format!("{source:?}: the `limit` binding is not supported"),
                ));
            }
            conditions
                .push(Predicate::parse(source).map_err(|e| invalid("conditions", e.to_string()))?);
        }
        let mut variables = Vec::with_capacity(raw.variables.len());
        for source in &raw.variables {
            variables
                .push(Expression::parse(source).map_err(|e| invalid("variables", e.to_string()))?);
        }
        let descriptors = raw
            .conditions
            .iter()
            .chain(&raw.variables)
            .flat_map(|s| descriptor_indices(s))
            .collect();
        let mut limit = match raw.id {
            Some(id) => Limit::with_id(
                id,
                raw.namespace,
                raw.max_value,
                raw.seconds,
                conditions.clone(),
                variables,
            ),
            None => Limit::new(
                raw.namespace,
                raw.max_value,
                raw.seconds,
                conditions.clone(),
                variables,
            ),
        };
        if let Some(name) = raw.name {
            limit.set_name(name);
        }
        Ok(Self {
            limit: Arc::new(limit),
            conditions,
            descriptors,
            index,
        })
    }
}

/// The indices `N` of every `descriptors[N]` in a CEL source (whitespace allowed inside the
/// brackets). A textual scan: good enough to attribute a limit to the descriptors it reads.
fn descriptor_indices(source: &str) -> Vec<usize> {
    const NAME: &str = "descriptors";
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(NAME) {
        rest = rest.get(at + NAME.len()..).unwrap_or_default();
        let after = rest.trim_start();
        let Some(inner) = after.strip_prefix('[') else {
            continue;
        };
        let inner = inner.trim_start();
        let digits: String = inner.chars().take_while(char::is_ascii_digit).collect();
        let close = inner.get(digits.len()..).unwrap_or_default().trim_start();
        if !digits.is_empty()
            && close.starts_with(']')
            && let Ok(n) = digits.parse()
        {
            found.push(n);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
- namespace: checkout
  max_value: 100
  seconds: 60
  name: per-user
  conditions:
    - "descriptors[0]['generic_key'] == 'checkout'"
  variables:
    - "descriptors[1]['user']"
- namespace: checkout
  max_value: 5
  seconds: 1
  conditions: []
  variables: []
- namespace: other
  id: the-id
  max_value: 0
  seconds: 3600
  conditions: ["descriptors[0].method == 'POST'"]
  variables: []
"#;

    #[test]
    fn limitador_file_loads() {
        let limits = Limits::from_yaml(EXAMPLE).unwrap();
        assert_eq!(limits.len(), 3);
        let checkout = limits.namespace("checkout");
        assert_eq!(checkout.len(), 2);
        assert_eq!(checkout[0].name(), Some("per-user"));
        assert_eq!(checkout[0].max_value(), 100);
        assert_eq!(checkout[0].window(), Duration::from_secs(60));
        assert_eq!(
            checkout[0].descriptors.iter().copied().collect::<Vec<_>>(),
            [0, 1]
        );
        assert!(checkout[1].descriptors.is_empty());
        assert_eq!(limits.namespace("other")[0].limit.id(), Some("the-id"));
        assert!(limits.namespace("nope").is_empty());
    }

    #[test]
    fn empty_file_is_no_limits() {
        assert!(Limits::from_yaml("").unwrap().is_empty());
        assert!(Limits::from_yaml("# nothing\n").unwrap().is_empty());
        assert!(Limits::from_yaml("[]").unwrap().is_empty());
    }

    fn error(yaml: &str) -> String {
        Limits::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn invalid_limits_are_rejected_with_the_reason() {
        let base = "namespace: a\n  max_value: 1\n  seconds: 1\n  conditions: []\n  variables: []";
        assert!(error(&format!("- {base}\n  bogus: 1")).contains("unknown field `bogus`"));
        assert!(
            error("- namespace: a\n  max_value: 1\n  seconds: 1\n  variables: []")
                .contains("missing field `conditions`")
        );
        assert!(
            error(
                "- namespace: a\n  max_value: -1\n  seconds: 1\n  conditions: []\n  variables: []"
            )
            .contains("max_value")
        );
        assert_eq!(
            error(
                "- namespace: ''\n  max_value: 1\n  seconds: 1\n  conditions: []\n  variables: []"
            ),
            "limit #0: namespace: must not be empty"
        );
        assert_eq!(
            error(&format!(
                "- {base}\n- namespace: a\n  max_value: 1\n  seconds: 0\n  conditions: []\n  variables: []"
            )),
            "limit #1: seconds: must be at least 1"
        );
        assert!(error("- namespace: a\n  max_value: 1\n  seconds: 1\n  conditions: [\"descriptors[0]['a'] ==\"]\n  variables: []")
            .starts_with("limit #0: conditions: couldn't parse"));
        assert!(error("- namespace: a\n  max_value: 1\n  seconds: 1\n  conditions: []\n  variables: [\"(\"]")
            .starts_with("limit #0: variables: couldn't parse"));
        assert!(error("- namespace: a\n  max_value: 1\n  seconds: 1\n  conditions: [\"limit.name == 'x'\"]\n  variables: []")
            .contains("`limit` binding is not supported"));
        assert!(error("namespace: a").contains("limits file"));
    }

    #[test]
    fn same_identity_twice_is_rejected() {
        let yaml = "
- {namespace: a, max_value: 1, seconds: 1, conditions: [\"x == '1'\", \"y == '2'\"], variables: []}
- {namespace: b, max_value: 1, seconds: 1, conditions: [\"x == '1'\", \"y == '2'\"], variables: []}
- {namespace: a, max_value: 9, seconds: 1, conditions: [\"y == '2'\", \"x == '1'\"], variables: [], name: other}
";
        assert_eq!(
            error(yaml),
            "limits #0 and #2 have the same namespace, seconds, conditions and variables (they would share one counter)"
        );
    }

    #[test]
    fn descriptor_indices_are_found() {
        assert_eq!(descriptor_indices("descriptors[0]['a'] == 'b'"), [0]);
        assert_eq!(descriptor_indices("descriptors [ 12 ].a"), [12]);
        assert_eq!(
            descriptor_indices("descriptors[0].a == descriptors[2].b"),
            [0, 2]
        );
        assert!(descriptor_indices("descriptors.size() > 1").is_empty());
        assert!(descriptor_indices("descriptors[i]").is_empty());
        assert!(descriptor_indices("descriptors").is_empty());
    }
}
