//! What the packer checks and records about a module before it ships it.
//!
//! Istio refuses fetched bytes that are not a Wasm binary, and Envoy refuses a module that exports
//! no known proxy-wasm ABI version; failing here, at build time, is cheaper. The ABI versions
//! found are written into the oci variant's runtime config (`abiVersions`).

use anyhow::{Result, bail};
use wasmparser::{Parser, Payload};

use crate::media::ABI_EXPORT_PREFIX;

/// Facts read from a module's binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The `proxy_abi_version_*` exports, sorted (e.g. `proxy_abi_version_0_2_1`).
    pub abi_versions: Vec<String>,
}

/// Parses the module's sections and collects its proxy-wasm ABI exports.
///
/// # Errors
/// When `bytes` is not a well-formed Wasm module or exports no `proxy_abi_version_*` function.
pub fn inspect(bytes: &[u8]) -> Result<ModuleInfo> {
    let mut abi_versions = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { encoding, .. } if encoding != wasmparser::Encoding::Module => {
                bail!("a Wasm component, not a core module")
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export?;
                    if export.name.starts_with(ABI_EXPORT_PREFIX) {
                        abi_versions.push(export.name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    if abi_versions.is_empty() {
        bail!("no {ABI_EXPORT_PREFIX}* export: not a proxy-wasm module");
    }
    abi_versions.sort();
    abi_versions.dedup();
    Ok(ModuleInfo { abi_versions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_module;

    #[test]
    fn abi_exports_are_found() {
        let info = inspect(&test_module("proxy_abi_version_0_2_1")).unwrap();
        assert_eq!(info.abi_versions, ["proxy_abi_version_0_2_1"]);
    }

    #[test]
    fn a_module_without_abi_export_is_refused() {
        let err = inspect(&test_module("_start")).unwrap_err();
        assert!(err.to_string().contains("not a proxy-wasm module"), "{err}");
    }

    #[test]
    fn non_wasm_bytes_are_refused() {
        assert!(inspect(b"plugin.wasm is not here").is_err());
        assert!(inspect(b"").is_err());
    }
}
