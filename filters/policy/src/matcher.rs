//! Request matchers shared by the filters' configs: path (exact or prefix) and method.

use serde::Deserialize;

/// `{"exact": "/healthz"}` or `{"prefix": "/batch/"}`, matched against the path without the
/// query string.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    /// The whole path equals this.
    Exact(String),
    /// The path starts with this.
    Prefix(String),
}

impl PathMatch {
    /// True when `path` (query string ignored) matches.
    pub fn matches(&self, path: &[u8]) -> bool {
        let path = strip_query(path);
        match self {
            Self::Exact(p) => path == p.as_bytes(),
            Self::Prefix(p) => path.starts_with(p.as_bytes()),
        }
    }
}

/// The path without `?query` or `#fragment`.
pub fn strip_query(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// Matches a request on path and/or method; an empty matcher matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestMatch {
    /// Path condition, if any.
    pub path: Option<PathMatch>,
    /// Method condition (case-sensitive, as HTTP methods are), if any.
    pub method: Option<String>,
}

impl RequestMatch {
    /// True when every condition that is set holds.
    pub fn matches(&self, path: &[u8], method: &[u8]) -> bool {
        self.path.as_ref().is_none_or(|p| p.matches(path))
            && self.method.as_ref().is_none_or(|m| m.as_bytes() == method)
    }

    /// True when this matcher needs `:path`.
    pub fn needs_path(&self) -> bool {
        self.path.is_some()
    }

    /// True when this matcher needs `:method`.
    pub fn needs_method(&self) -> bool {
        self.method.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn paths() {
        let exact = PathMatch::Exact("/healthz".into());
        assert!(exact.matches(b"/healthz"));
        assert!(exact.matches(b"/healthz?verbose=1"));
        assert!(!exact.matches(b"/healthz/x"));
        let prefix = PathMatch::Prefix("/batch/".into());
        assert!(prefix.matches(b"/batch/jobs"));
        assert!(!prefix.matches(b"/batch"));
        assert!(!prefix.matches(b"/x?/batch/"));
    }

    #[test]
    fn request_match_json() {
        let m: RequestMatch =
            serde_json::from_str(r#"{"path": {"prefix": "/a"}, "method": "POST"}"#).unwrap();
        assert!(m.matches(b"/a/b", b"POST"));
        assert!(!m.matches(b"/a/b", b"GET"));
        assert!(RequestMatch::default().matches(b"/", b"GET"));
        assert!(serde_json::from_str::<RequestMatch>(r#"{"path": {"regex": ".*"}}"#).is_err());
    }
}
