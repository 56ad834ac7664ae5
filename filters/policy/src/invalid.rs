//! The error of a config that parsed but makes no sense (second phase of config loading).

use core::fmt;

/// A field whose value is not acceptable, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Path of the field, e.g. `concurrency_limit_params.min_concurrency_limit`.
    pub field: String,
    /// Why, e.g. `must be at most max_concurrency_limit (1000)`.
    pub reason: String,
}

impl Invalid {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Checks a condition on a field; `Err(Invalid)` with `reason` when it fails.
///
/// # Errors
/// When `ok` is false.
pub fn ensure(ok: bool, field: &str, reason: impl FnOnce() -> String) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(field, reason()))
    }
}
