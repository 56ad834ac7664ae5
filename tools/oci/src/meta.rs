//! What the annotations say about a build, and where each value comes from.
//!
//! Nothing here reads the clock: `created` is `SOURCE_DATE_EPOCH` when set (the
//! reproducible-builds.org convention), else the commit time of `HEAD`, else 0 (1970-01-01). The
//! same source therefore gives the same annotations, and the same digests, on any machine.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat};

/// The facts every artifact of one build carries as annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// `org.opencontainers.image.version` and the tag: the workspace version.
    pub version: String,
    /// `org.opencontainers.image.revision`: the source commit, or `unknown`.
    pub revision: String,
    /// `org.opencontainers.image.created` (seconds since the epoch), also the tar entry mtime.
    pub created: i64,
    /// `org.opencontainers.image.source`: the repository URL.
    pub source: String,
    /// `org.opencontainers.image.licenses` (SPDX).
    pub licenses: String,
}

impl BuildInfo {
    /// Version, source and licence from the workspace manifest; revision and time from fixed
    /// inputs (see [`BuildInfo::detect`] for the defaults a release uses).
    pub fn new(revision: &str, created: i64) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision: revision.to_owned(),
            created,
            source: env!("CARGO_PKG_REPOSITORY").to_owned(),
            licenses: env!("CARGO_PKG_LICENSE").to_owned(),
        }
    }

    /// The build info of the checkout at `root`: revision `git rev-parse HEAD` (or `unknown`
    /// outside a git checkout); created from `SOURCE_DATE_EPOCH`, else the commit time of
    /// `HEAD`, else 0.
    ///
    /// # Errors
    /// When `SOURCE_DATE_EPOCH` is set but is not an integer.
    pub fn detect(root: &Path) -> Result<Self> {
        let revision = git(root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let created = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v
                .trim()
                .parse()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not an integer"))?,
            Err(_) => git(root, &["log", "-1", "--format=%ct", "HEAD"])
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
        };
        Ok(Self::new(&revision, created))
    }

    /// `created` as RFC 3339 in UTC with seconds (`2026-01-31T12:00:00Z`).
    ///
    /// # Errors
    /// When `created` is outside the range a date can represent.
    pub fn created_rfc3339(&self) -> Result<String> {
        let t = DateTime::from_timestamp(self.created, 0)
            .with_context(|| format!("created time {} out of range", self.created))?;
        Ok(t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    /// The tar entry mtime: `created`, or 0 before the epoch.
    pub fn mtime(&self) -> u64 {
        u64::try_from(self.created).unwrap_or(0)
    }
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_is_rfc3339_utc_seconds() {
        let info = BuildInfo::new("abc", 1_767_225_600);
        assert_eq!(info.created_rfc3339().unwrap(), "2026-01-01T00:00:00Z");
        assert_eq!(
            BuildInfo::new("abc", 0).created_rfc3339().unwrap(),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn version_and_source_come_from_the_workspace() {
        let info = BuildInfo::new("abc", 0);
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(info.source.starts_with("https://"), "{}", info.source);
        assert_eq!(info.licenses, "Apache-2.0");
    }

    #[test]
    fn outside_git_the_revision_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let info = BuildInfo::detect(dir.path()).unwrap();
        assert_eq!(info.revision, "unknown");
    }
}
