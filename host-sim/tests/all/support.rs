//! Shared helpers.

use host_sim::{Envoy, EnvoyBuilder, HeaderMap, Module};

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn probe() -> Result<EnvoyBuilder> {
    Ok(Envoy::builder(Module::load("abi_probe")?))
}

pub fn noop() -> Result<EnvoyBuilder> {
    Ok(Envoy::builder(Module::load("noop")?))
}

/// A GET with `x-probe: <cmds>`.
pub fn get(cmds: &str) -> HeaderMap {
    let mut h = HeaderMap::from([
        (":method", "GET"),
        (":path", "/p?q=1"),
        (":authority", "svc"),
        (":scheme", "http"),
    ]);
    if !cmds.is_empty() {
        h.add("x-probe", cmds);
    }
    h
}

/// The first probe log line for `cmd` (`probe:<cmd>:...`), without the prefix.
pub fn probe_line(envoy: &Envoy, cmd: &str) -> Option<String> {
    let prefix = format!("probe:{cmd}:");
    envoy
        .logs()
        .into_iter()
        .find_map(|l| l.message.strip_prefix(&prefix).map(str::to_string))
}

/// Every probe log line for `cmd`.
pub fn probe_lines(envoy: &Envoy, cmd: &str) -> Vec<String> {
    let prefix = format!("probe:{cmd}:");
    envoy
        .logs()
        .into_iter()
        .filter_map(|l| l.message.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// `key=value` from a probe line.
pub fn field(line: &str, key: &str) -> Option<String> {
    let needle = format!("{key}=");
    line.split(' ')
        .find_map(|w| w.strip_prefix(&needle).map(str::to_string))
}
