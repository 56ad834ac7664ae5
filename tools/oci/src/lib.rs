//! Packs meshguard's compiled filters as OCI artifacts that Istio and Envoy Gateway can pull,
//! and that stock Envoy can fetch a module from over HTTP.
//!
//! For each built module `dist/<name>.wasm` it writes one OCI image layout
//! `dist/oci/<name>/` holding two images (see [`variant`]):
//!
//! | tag | variant | layers |
//! |---|---|---|
//! | `<version>-compat` | compat | one `application/vnd.oci.image.layer.v1.tar+gzip` with `plugin.wasm` |
//! | `<version>` | oci | `application/vnd.module.wasm.config.v1+json`, `application/vnd.module.wasm.content.layer.v1+wasm` |
//!
//! The output is reproducible: the same module and [`BuildInfo`] give byte-identical layouts
//! (fixed tar header fields, deterministic gzip, canonical JSON, a `created` time taken from the
//! source, never the clock), so a digest identifies the source it was built from. Pushing is
//! left to a well-kept client (`skopeo copy --preserve-digests oci:… docker://…`, see
//! `./build.sh push`), which keeps those digests.

#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod blob;
pub mod canonical;
pub mod layout;
pub mod media;
pub mod meta;
pub mod module;
pub mod variant;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use layout::Layout;
pub use meta::BuildInfo;
pub use variant::{Image, Variant};

/// The single-policy filters; each must be built (`dist/<name>.wasm`).
pub const FILTERS: [&str; 4] = [
    "load_shed",
    "circuit_breaker",
    "rate_limit",
    "sandbox_router",
];
/// The all-policies bundle, packed when `dist/meshguard.wasm` exists.
pub const BUNDLE: &str = "meshguard";

/// One packed image, as printed by the tool and read by `./build.sh push`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// Artifact (module) name, also its `root_id` and repository name.
    pub name: String,
    /// The variant.
    pub variant: Variant,
    /// Its tag in the layout.
    pub tag: String,
    /// The layout directory.
    pub layout: PathBuf,
    /// `sha256:<hex>` of the manifest: the image digest Istio / Envoy Gateway pin.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the module: what Envoy's `vm_config.code.remote.sha256` pins.
    pub module_digest: String,
    /// Module size in bytes.
    pub module_size: usize,
}

impl Packed {
    /// One line, `key=value` separated by spaces (no spaces inside values).
    pub fn line(&self) -> String {
        format!(
            "artifact={} variant={} tag={} manifest={} module={} bytes={} layout={}",
            self.name,
            self.variant.as_str(),
            self.tag,
            self.manifest_digest,
            self.module_digest,
            self.module_size,
            self.layout.display()
        )
    }
}

/// Packs the module `wasm` named `name` into the layout `<out>/<name>/` (both variants).
///
/// # Errors
/// When the module is not a proxy-wasm module or the layout cannot be written.
pub fn pack(name: &str, wasm: &[u8], info: &BuildInfo, out: &Path) -> Result<Vec<Packed>> {
    let images = Variant::ALL
        .iter()
        .map(|v| variant::build(*v, name, wasm, info))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("packing {name}"))?;
    let dir = out.join(name);
    layout::write(&dir, &images)?;
    Ok(images
        .into_iter()
        .map(|i| Packed {
            name: name.to_owned(),
            variant: i.variant,
            tag: i.tag,
            layout: dir.clone(),
            manifest_digest: i.manifest.digest,
            module_digest: i.module_digest,
            module_size: i.module_size,
        })
        .collect())
}

/// Packs every filter in `dist` (and the bundle when built) into `out`.
///
/// # Errors
/// When a filter module is missing (run `./build.sh` first) or cannot be packed.
pub fn pack_dist(dist: &Path, out: &Path, info: &BuildInfo) -> Result<Vec<Packed>> {
    let mut packed = Vec::new();
    for name in FILTERS.iter().chain([&BUNDLE]) {
        let path = dist.join(format!("{name}.wasm"));
        if !path.is_file() {
            if *name == BUNDLE {
                continue;
            }
            bail!("{} not found: run ./build.sh first", path.display());
        }
        let wasm = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        packed.extend(pack(name, &wasm, info, out)?);
    }
    Ok(packed)
}

/// A minimal module exporting one empty function under `name`.
#[cfg(test)]
pub(crate) fn test_module(name: &str) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend([0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type section: func () -> ()
    m.extend([0x03, 0x02, 0x01, 0x00]); // function section: function 0 has type 0
    let mut export = vec![0x01, u8::try_from(name.len()).unwrap()];
    export.extend(name.as_bytes());
    export.extend([0x00, 0x00]); // kind func, index 0
    m.push(0x07);
    m.push(u8::try_from(export.len()).unwrap());
    m.extend(export);
    m.extend([0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b]); // code section: one empty body
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_dist_needs_every_filter_and_takes_the_bundle_when_present() {
        let dist = tempfile::tempdir().unwrap();
        let out = dist.path().join("oci");
        let info = BuildInfo::new("r", 0);
        assert!(pack_dist(dist.path(), &out, &info).is_err());
        for f in FILTERS {
            std::fs::write(
                dist.path().join(format!("{f}.wasm")),
                test_module("proxy_abi_version_0_2_1"),
            )
            .unwrap();
        }
        assert_eq!(pack_dist(dist.path(), &out, &info).unwrap().len(), 8);
        std::fs::write(
            dist.path().join("meshguard.wasm"),
            test_module("proxy_abi_version_0_2_1"),
        )
        .unwrap();
        let packed = pack_dist(dist.path(), &out, &info).unwrap();
        assert_eq!(packed.len(), 10);
        assert!(
            packed[0]
                .line()
                .starts_with("artifact=load_shed variant=compat tag=")
        );
    }
}
