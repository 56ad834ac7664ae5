//! OCI image layouts on disk: write one per artifact, read one back the way Istio does.
//!
//! A layout (image-spec `image-layout.md`) is a directory with `oci-layout`
//! (`{"imageLayoutVersion":"1.0.0"}`), `index.json` (an image index whose manifest descriptors
//! are tagged by `org.opencontainers.image.ref.name`) and `blobs/sha256/<hex>`. It is what
//! `skopeo copy oci:<dir>:<tag> docker://…` pushes from and `skopeo copy docker://… oci:<dir>:<tag>`
//! pulls into.
//!
//! Writing is all-or-nothing: the new layout is written beside the old one and renamed over it,
//! so a stale blob from an earlier build never lingers and a failed build leaves the old layout.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType};
use serde_json::json;

use crate::blob::{Blob, sha256_digest};
use crate::canonical;
use crate::media::{ANNOTATION_REF_NAME, LAYER_TAR_GZIP, PLUGIN_FILE, WASM_CONTENT};
use crate::variant::Image;

/// Writes `images` as one layout at `dir` (replacing whatever is there), each manifest tagged
/// with its image's tag; `index.json` lists them sorted by tag.
///
/// # Errors
/// On I/O errors, or when two images share a tag.
pub fn write(dir: &Path, images: &[Image]) -> Result<()> {
    let mut images: Vec<&Image> = images.iter().collect();
    images.sort_by(|a, b| a.tag.cmp(&b.tag));
    if images.windows(2).any(|w| w[0].tag == w[1].tag) {
        bail!("two images tagged alike in {}", dir.display());
    }
    let parent = dir.parent().context("layout directory has no parent")?;
    fs::create_dir_all(parent)?;
    let name = dir.file_name().context("layout directory has no name")?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    let result = write_into(&tmp, &images).and_then(|()| {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::rename(&tmp, dir)?;
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.with_context(|| format!("writing OCI layout {}", dir.display()))
}

fn write_into(dir: &Path, images: &[&Image]) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(
        dir.join("oci-layout"),
        canonical::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))?,
    )?;
    let mut manifests = Vec::new();
    for image in images {
        for blob in image.blobs.iter().chain([&image.manifest]) {
            fs::write(blobs.join(blob.hex()), &blob.bytes)?;
        }
        manifests.push(
            image
                .manifest
                .descriptor(&[(ANNOTATION_REF_NAME, &image.tag)])?,
        );
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?;
    fs::write(dir.join("index.json"), canonical::to_vec(&index)?)?;
    Ok(())
}

/// A layout on disk, opened for reading; every blob read is checked against its digest.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
    index: ImageIndex,
}

impl Layout {
    /// Opens the layout at `dir`.
    ///
    /// # Errors
    /// When `oci-layout` or `index.json` is missing or malformed.
    pub fn open(dir: &Path) -> Result<Self> {
        let marker: serde_json::Value = serde_json::from_slice(
            &fs::read(dir.join("oci-layout"))
                .with_context(|| format!("{} is not an OCI layout", dir.display()))?,
        )?;
        if marker["imageLayoutVersion"] != "1.0.0" {
            bail!("{}: unsupported oci-layout {marker}", dir.display());
        }
        let index = serde_json::from_slice(&fs::read(dir.join("index.json"))?)
            .with_context(|| format!("{}/index.json", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            index,
        })
    }

    /// The tags in `index.json`, in file order.
    pub fn tags(&self) -> Vec<String> {
        self.index
            .manifests()
            .iter()
            .filter_map(|d| d.annotations().as_ref()?.get(ANNOTATION_REF_NAME).cloned())
            .collect()
    }

    /// The manifest descriptor tagged `tag`.
    ///
    /// # Errors
    /// When no manifest has that tag.
    pub fn descriptor(&self, tag: &str) -> Result<&Descriptor> {
        self.index
            .manifests()
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_REF_NAME))
                    .is_some_and(|t| t == tag)
            })
            .with_context(|| format!("no tag {tag:?} in {}", self.dir.display()))
    }

    /// The bytes of the blob `descriptor` points at, checked against its digest and size.
    ///
    /// # Errors
    /// When the blob is missing or its content does not match.
    pub fn blob(&self, descriptor: &Descriptor) -> Result<Blob> {
        let digest = descriptor.digest().to_string();
        let hex = digest
            .strip_prefix("sha256:")
            .with_context(|| format!("unsupported digest {digest}"))?;
        let bytes = fs::read(self.dir.join("blobs/sha256").join(hex))
            .with_context(|| format!("blob {digest} in {}", self.dir.display()))?;
        if sha256_digest(&bytes) != digest || u64::try_from(bytes.len())? != descriptor.size() {
            bail!(
                "blob {digest} in {} does not match its descriptor",
                self.dir.display()
            );
        }
        Ok(Blob::new(descriptor.media_type().as_ref(), bytes))
    }

    /// The manifest tagged `tag`: its blob (bytes and digest) and parsed form.
    ///
    /// # Errors
    /// When the tag or its blob is missing or the manifest does not parse.
    pub fn manifest(&self, tag: &str) -> Result<(Blob, ImageManifest)> {
        let blob = self.blob(self.descriptor(tag)?)?;
        let manifest = serde_json::from_slice(&blob.bytes)
            .with_context(|| format!("manifest {tag} in {}", self.dir.display()))?;
        Ok((blob, manifest))
    }

    /// The Wasm module of the image tagged `tag`, extracted by Istio's rules (see
    /// [`extract_module`]).
    ///
    /// # Errors
    /// As [`extract_module`], or when a blob is missing or corrupt.
    pub fn module(&self, tag: &str) -> Result<Vec<u8>> {
        let (_, manifest) = self.manifest(tag)?;
        extract_module(&manifest, |d| self.blob(d).map(|b| b.bytes))
    }
}

/// Extracts the module from an image the way Istio's `pkg/wasm/imagefetcher.go` does for OCI
/// manifests: if the *last* layer is `application/vnd.oci.image.layer.v1.tar+gzip`, gunzip and
/// untar it and take the first entry whose base name is `plugin.wasm` (compat); otherwise the
/// image must have exactly two layers, one of them `application/vnd.module.wasm.content.layer.v1+wasm`,
/// read raw (oci). Anything else is refused, as Istio refuses it.
///
/// # Errors
/// When the image is neither variant, or `blob` fails.
pub fn extract_module(
    manifest: &ImageManifest,
    mut blob: impl FnMut(&Descriptor) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let layers = manifest.layers();
    let Some(last) = layers.last() else {
        bail!("image has no layers");
    };
    if last.media_type().to_string() == LAYER_TAR_GZIP {
        let gz = blob(last)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.path()?.file_name().is_some_and(|n| n == PLUGIN_FILE) {
                let mut out = Vec::new();
                entry.read_to_end(&mut out)?;
                return Ok(out);
            }
        }
        bail!("compat layer has no {PLUGIN_FILE}");
    }
    if layers.len() != 2 {
        bail!("oci variant must have 2 layers, got {}", layers.len());
    }
    let content = layers
        .iter()
        .find(|l| l.media_type().to_string() == WASM_CONTENT)
        .with_context(|| format!("no {WASM_CONTENT} layer"))?;
    blob(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::BuildInfo;
    use crate::test_module;
    use crate::variant::{Variant, build};

    fn images(wasm: &[u8]) -> Vec<Image> {
        Variant::ALL
            .iter()
            .map(|v| build(*v, "load_shed", wasm, &BuildInfo::new("r", 0)).unwrap())
            .collect()
    }

    #[test]
    fn both_variants_round_trip_through_a_layout() {
        let wasm = test_module("proxy_abi_version_0_2_1");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("load_shed");
        write(&path, &images(&wasm)).unwrap();
        let layout = Layout::open(&path).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            layout.tags(),
            [version.to_owned(), format!("{version}-compat")]
        );
        for tag in layout.tags() {
            assert_eq!(layout.module(&tag).unwrap(), wasm, "{tag}");
        }
        let files: Vec<_> = fs::read_dir(path.join("blobs/sha256")).unwrap().collect();
        assert_eq!(files.len(), 2 + 2 + 2, "two manifests, four distinct blobs");
    }

    #[test]
    fn rewriting_replaces_the_layout_and_drops_stale_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        write(&path, &images(&test_module("proxy_abi_version_0_2_1"))).unwrap();
        fs::write(path.join("blobs/sha256/stale"), b"old").unwrap();
        write(&path, &images(&test_module("proxy_abi_version_0_2_0"))).unwrap();
        assert!(!path.join("blobs/sha256/stale").exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary directory left");
    }

    #[test]
    fn a_corrupt_blob_is_detected() {
        let wasm = test_module("proxy_abi_version_0_2_1");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        write(&path, &images(&wasm)).unwrap();
        let layout = Layout::open(&path).unwrap();
        let (_, m) = layout.manifest(env!("CARGO_PKG_VERSION")).unwrap();
        let hex = m.layers()[1].digest().to_string().replace("sha256:", "");
        fs::write(path.join("blobs/sha256").join(hex), b"tampered").unwrap();
        let err = layout.module(env!("CARGO_PKG_VERSION")).unwrap_err();
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    }

    #[test]
    fn images_that_istio_refuses_are_refused() {
        let wasm = test_module("proxy_abi_version_0_2_1");
        let oci = build(Variant::Oci, "x", &wasm, &BuildInfo::new("r", 0)).unwrap();
        let mut m: ImageManifest = serde_json::from_slice(&oci.manifest.bytes).unwrap();
        // A single raw-module layer (a plain `oras push`) is not a variant Istio reads.
        let content = m.layers()[1].clone();
        m.set_layers(vec![content]);
        let err = extract_module(&m, |_| Ok(wasm.clone())).unwrap_err();
        assert!(err.to_string().contains("must have 2 layers"), "{err}");
    }
}
