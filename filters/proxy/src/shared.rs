//! Proxy-wasm shared data as a [`Store`]: the process-wide state policies share across
//! Envoy's worker VMs (keyed by `vm_id` in Envoy).

use meshguard_policy::store::Store;

use crate::abi;

/// The host's shared data.
#[derive(Clone, Copy, Debug, Default)]
pub struct SharedData;

impl Store for SharedData {
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        abi::get_shared_data(key).ok().flatten()
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        abi::set_shared_data(key, value, cas).is_ok()
    }
}

/// The name of this plugin (`plugin_name` property), to keep the shared-data keys of two
/// plugins that share a `vm_id` apart. Empty when the host does not say.
pub fn plugin_name() -> String {
    abi::get_property(&["plugin_name"])
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
}
