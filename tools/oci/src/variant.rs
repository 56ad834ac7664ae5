//! The two image variants, built from one module.
//!
//! - **compat** (tag `<version>-compat`): a regular OCI image with one
//!   `application/vnd.oci.image.layer.v1.tar+gzip` layer that holds `plugin.wasm`, and an OCI
//!   image config (`architecture: wasm`, `os: wasip1`). Registries that reject custom media
//!   types accept it; Istio and Envoy Gateway read it.
//! - **oci** (tag `<version>`): config `application/vnd.module.wasm.config.v1+json` (the solo-io
//!   runtime config) and exactly two layers, that same runtime config and the raw module as
//!   `application/vnd.module.wasm.content.layer.v1+wasm`. Istio's fetcher insists on two layers
//!   for this variant; the raw-module layer is also a blob that stock Envoy can fetch over HTTP
//!   (`vm_config.code.remote`), pinned by the module's own sha256.
//!
//! Both manifests carry the same standard annotations plus `module.wasm.image/variant`.

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::Result;
use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, ConfigBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder,
};
use serde_json::json;

use crate::blob::{Blob, sha256_digest};
use crate::media::{
    ANNOTATION_CREATED, ANNOTATION_LICENSES, ANNOTATION_REVISION, ANNOTATION_SOURCE,
    ANNOTATION_TITLE, ANNOTATION_VARIANT, ANNOTATION_VERSION, IMAGE_CONFIG, IMAGE_MANIFEST,
    LAYER_TAR_GZIP, PLUGIN_FILE, RUNTIME_CONFIG_FILE, RUNTIME_TYPE_ENVOY, WASM_CONFIG,
    WASM_CONTENT,
};
use crate::meta::BuildInfo;
use crate::{canonical, module};

/// Which of the two layouts Istio / Envoy Gateway read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// One tar+gzip layer holding `plugin.wasm`.
    Compat,
    /// Runtime-config layer + raw-module layer.
    Oci,
}

impl Variant {
    /// Both, in the order they are built.
    pub const ALL: [Variant; 2] = [Variant::Compat, Variant::Oci];

    /// The `module.wasm.image/variant` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Compat => "compat",
            Variant::Oci => "oci",
        }
    }

    /// The tag of this variant for `version`: `<version>-compat` or `<version>`.
    pub fn tag(self, version: &str) -> String {
        match self {
            Variant::Compat => format!("{version}-compat"),
            Variant::Oci => version.to_owned(),
        }
    }
}

/// One image: its manifest and every blob the manifest points at (config and layers).
#[derive(Clone, Debug)]
pub struct Image {
    /// The variant.
    pub variant: Variant,
    /// The tag it gets in the layout.
    pub tag: String,
    /// The manifest (media type [`IMAGE_MANIFEST`]); its digest is the image digest.
    pub manifest: Blob,
    /// Config and layer blobs (a blob used twice appears once).
    pub blobs: Vec<Blob>,
    /// `sha256:<hex>` of the module itself (what Envoy's `remote.sha256` pins).
    pub module_digest: String,
    /// Module size in bytes.
    pub module_size: usize,
}

/// Builds `variant` of the module `name` (also its `root_id`).
///
/// # Errors
/// When the module is not a proxy-wasm module (see [`module::inspect`]) or `info` cannot be
/// rendered.
pub fn build(variant: Variant, name: &str, wasm: &[u8], info: &BuildInfo) -> Result<Image> {
    let facts = module::inspect(wasm)?;
    let created = info.created_rfc3339()?;
    let annotations: Vec<(&str, &str)> = vec![
        (ANNOTATION_TITLE, name),
        (ANNOTATION_SOURCE, &info.source),
        (ANNOTATION_VERSION, &info.version),
        (ANNOTATION_REVISION, &info.revision),
        (ANNOTATION_CREATED, &created),
        (ANNOTATION_LICENSES, &info.licenses),
        (ANNOTATION_VARIANT, variant.as_str()),
    ];
    let (config, layers) = match variant {
        Variant::Compat => {
            let tar = plugin_tar(wasm, info.mtime())?;
            let labels: HashMap<String, String> = annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let image_config = ImageConfigurationBuilder::default()
                .created(created.clone())
                .architecture(Arch::Wasm)
                .os(Os::Other("wasip1".into()))
                .config(ConfigBuilder::default().labels(labels).build()?)
                .rootfs(
                    RootFsBuilder::default()
                        .typ("layers")
                        .diff_ids(vec![sha256_digest(&tar)])
                        .build()?,
                )
                .build()?;
            let config = Blob::new(IMAGE_CONFIG, canonical::to_vec(&image_config)?);
            let layer = Blob::new(LAYER_TAR_GZIP, gzip(&tar)?);
            (config, vec![(layer, None)])
        }
        Variant::Oci => {
            let runtime = json!({
                "type": RUNTIME_TYPE_ENVOY,
                "abiVersions": facts.abi_versions,
                "config": {"root_ids": [name]},
            });
            let config = Blob::new(WASM_CONFIG, canonical::to_vec(&runtime)?);
            let content = Blob::new(WASM_CONTENT, wasm.to_vec());
            (
                config.clone(),
                vec![
                    (config, Some(RUNTIME_CONFIG_FILE)),
                    (content, Some(PLUGIN_FILE)),
                ],
            )
        }
    };
    let mut layer_descriptors = Vec::new();
    for (blob, title) in &layers {
        let ann: Vec<(&str, &str)> = title.iter().map(|t| (ANNOTATION_TITLE, *t)).collect();
        layer_descriptors.push(blob.descriptor(&ann)?);
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor(&[])?)
        .layers(layer_descriptors)
        .annotations(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        )
        .build()?;
    let mut blobs = vec![config];
    for (blob, _) in layers {
        if !blobs.iter().any(|b| b.digest == blob.digest) {
            blobs.push(blob);
        }
    }
    Ok(Image {
        variant,
        tag: variant.tag(&info.version),
        manifest: Blob::new(IMAGE_MANIFEST, canonical::to_vec(&manifest)?),
        blobs,
        module_digest: sha256_digest(wasm),
        module_size: wasm.len(),
    })
}

/// A tar archive with the single entry `plugin.wasm`: a plain ustar header (no PAX or GNU
/// extension records), mode 0644, uid/gid 0, empty user/group names, the given mtime.
///
/// # Errors
/// Only on an I/O error writing to memory (none in practice).
pub fn plugin_tar(wasm: &[u8], mtime: u64) -> Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_path(PLUGIN_FILE)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(u64::try_from(wasm.len())?);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, wasm)?;
    Ok(builder.into_inner()?)
}

/// Deterministic gzip: header mtime 0, no file name or comment, OS byte 255 (unknown), best
/// compression with the pure-Rust deflate of the `Cargo.lock`-pinned `miniz_oxide`.
///
/// # Errors
/// Only on an I/O error writing to memory (none in practice).
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use oci_spec::image::ImageManifest;

    use super::*;
    use crate::test_module;

    fn manifest(image: &Image) -> ImageManifest {
        serde_json::from_slice(&image.manifest.bytes).unwrap()
    }

    #[test]
    fn tags_per_variant() {
        assert_eq!(Variant::Compat.tag("1.2.3"), "1.2.3-compat");
        assert_eq!(Variant::Oci.tag("1.2.3"), "1.2.3");
    }

    #[test]
    fn tar_header_fields_are_fixed() {
        let tar = plugin_tar(b"\0asm", 1234).unwrap();
        assert_eq!(
            tar.len(),
            512 + 512 + 1024,
            "header, one data block, two end blocks"
        );
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        let h = e.header().clone();
        assert_eq!(h.path().unwrap().to_str(), Some(PLUGIN_FILE));
        assert_eq!(
            (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0o644, 0, 0)
        );
        assert_eq!(h.mtime().unwrap(), 1234);
        assert_eq!(h.username().unwrap(), Some(""));
        assert!(h.as_ustar().is_some(), "plain ustar, no GNU header");
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        assert_eq!(body, b"\0asm");
        assert!(entries.next().is_none(), "one entry only");
    }

    #[test]
    fn gzip_header_has_no_time_name_or_os() {
        let gz = gzip(b"hello").unwrap();
        // ID1 ID2 CM FLG MTIME(4) XFL OS
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn compat_has_one_tar_gzip_layer_and_the_variant_annotation() {
        let wasm = test_module("proxy_abi_version_0_2_1");
        let image = build(Variant::Compat, "load_shed", &wasm, &BuildInfo::new("r", 0)).unwrap();
        let m = manifest(&image);
        assert_eq!(m.layers().len(), 1);
        assert_eq!(m.layers()[0].media_type().to_string(), LAYER_TAR_GZIP);
        assert_eq!(m.config().media_type().to_string(), IMAGE_CONFIG);
        let ann = m.annotations().as_ref().unwrap();
        assert_eq!(ann[ANNOTATION_VARIANT], "compat");
        assert_eq!(ann[ANNOTATION_TITLE], "load_shed");
        assert_eq!(ann[ANNOTATION_REVISION], "r");
        assert_eq!(ann[ANNOTATION_CREATED], "1970-01-01T00:00:00Z");
        assert_eq!(image.blobs.len(), 2);
    }

    #[test]
    fn oci_has_exactly_two_layers_config_then_raw_module() {
        let wasm = test_module("proxy_abi_version_0_2_1");
        let image = build(Variant::Oci, "rate_limit", &wasm, &BuildInfo::new("r", 0)).unwrap();
        let m = manifest(&image);
        let types: Vec<String> = m
            .layers()
            .iter()
            .map(|l| l.media_type().to_string())
            .collect();
        assert_eq!(types, [WASM_CONFIG, WASM_CONTENT]);
        assert_eq!(m.config().media_type().to_string(), WASM_CONFIG);
        assert_eq!(m.layers()[1].digest().to_string(), sha256_digest(&wasm));
        assert_eq!(m.annotations().as_ref().unwrap()[ANNOTATION_VARIANT], "oci");
        let runtime: serde_json::Value = serde_json::from_slice(&image.blobs[0].bytes).unwrap();
        assert_eq!(
            runtime,
            json!({"type": "envoy_proxy", "abiVersions": ["proxy_abi_version_0_2_1"],
                   "config": {"root_ids": ["rate_limit"]}})
        );
        assert_eq!(image.blobs.len(), 2, "the runtime config is stored once");
    }

    #[test]
    fn same_inputs_same_digests_and_each_input_matters() {
        let wasm = test_module("proxy_abi_version_0_2_1");
        for v in Variant::ALL {
            let a = build(v, "x", &wasm, &BuildInfo::new("r", 7)).unwrap();
            let b = build(v, "x", &wasm, &BuildInfo::new("r", 7)).unwrap();
            assert_eq!(a.manifest, b.manifest, "{v:?}");
            assert_eq!(a.blobs, b.blobs, "{v:?}");
            let other_rev = build(v, "x", &wasm, &BuildInfo::new("s", 7)).unwrap();
            let other_time = build(v, "x", &wasm, &BuildInfo::new("r", 8)).unwrap();
            assert_ne!(a.manifest.digest, other_rev.manifest.digest, "{v:?}");
            assert_ne!(a.manifest.digest, other_time.manifest.digest, "{v:?}");
        }
    }
}
