//! The media types and annotation keys of the two Wasm image variants.
//!
//! Istio (`pkg/wasm/imagefetcher.go`) and Envoy Gateway (a copy of it) read exactly two layouts
//! from the solo-io "Wasm Image Specification": the *compat* variant (one
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`) and the *oci*
//! variant (exactly two layers, one of them the raw module as
//! `application/vnd.module.wasm.content.layer.v1+wasm`). The CNCF `application/wasm` layout is
//! read by neither, so it is not produced.

/// Config blob and first layer of the oci variant: the solo-io runtime config JSON.
pub const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
/// Second layer of the oci variant: the raw Wasm module.
pub const WASM_CONTENT: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The compat variant's single layer.
pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The compat variant's config (a regular OCI image config, so `skopeo inspect`,
/// `crane` and container tools read it as an image).
pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Every manifest written.
pub const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `index.json` of the layout.
pub const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The file inside the compat layer that Istio looks for (by base name).
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// Title of the runtime-config layer in the oci variant (as in the solo-io example).
pub const RUNTIME_CONFIG_FILE: &str = "runtime-config.json";

/// Manifest annotation naming the variant (`compat` or `oci`); the solo-io compat spec asks for
/// `compat` on images whose layer uses the OCI tar+gzip type.
pub const ANNOTATION_VARIANT: &str = "module.wasm.image/variant";
pub use oci_spec::image::{
    ANNOTATION_CREATED, ANNOTATION_LICENSES, ANNOTATION_REF_NAME, ANNOTATION_REVISION,
    ANNOTATION_SOURCE, ANNOTATION_TITLE, ANNOTATION_VERSION,
};

/// The solo-io runtime `type` for Envoy filters.
pub const RUNTIME_TYPE_ENVOY: &str = "envoy_proxy";
/// Export name prefix by which a proxy-wasm module declares its ABI version
/// (`proxy_abi_version_0_2_1`); Envoy checks these exports when it loads a module.
pub const ABI_EXPORT_PREFIX: &str = "proxy_abi_version_";
