//! `meshguard-wasm-trim IN OUT --keep request_headers,log,...`: removes from a proxy-wasm
//! module the optional HTTP callback exports that are not kept, then drops the code only they
//! reached.
//!
//! Why: the proxy-wasm Rust SDK exports every callback, and Envoy (proxy-wasm cpp-host) calls
//! every exported one — `proxy_on_response_body` for each body chunk, `proxy_on_done`, ... —
//! while it skips a callback the module does not export (`if (!wasm_->on_response_body_)
//! return Continue`). Each call is a VM entry, a measurable share of a filter's cost. A filter
//! that never looks at a response body should not be entered for one.
//!
//! Only callbacks whose absence Envoy treats as "continue / nothing to do" are ever removed
//! (the list below); the lifecycle exports (`_initialize`, `proxy_on_context_create`,
//! `proxy_on_vm_start`, `proxy_on_configure`, `proxy_on_delete`, `proxy_on_tick`, the
//! allocator, the ABI version marker) are always kept. walrus does the parsing, the garbage
//! collection and the encoding; this file only decides what goes.

use anyhow::{Context, Result, bail};

/// Callback exports that may be removed, by short name (`proxy_on_<name>`).
const OPTIONAL: [&str; 21] = [
    "request_body",
    "request_trailers",
    "request_metadata",
    "response_headers",
    "response_body",
    "response_trailers",
    "response_metadata",
    "log",
    "done",
    "http_call_response",
    "grpc_receive_initial_metadata",
    "grpc_receive",
    "grpc_receive_trailing_metadata",
    "grpc_close",
    "queue_ready",
    "foreign_function",
    "new_connection",
    "downstream_data",
    "downstream_connection_close",
    "upstream_data",
    "upstream_connection_close",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(output), Some("--keep"), Some(keep)) = (
        args.first(),
        args.get(1),
        args.get(2).map(String::as_str),
        args.get(3),
    ) else {
        bail!(
            "usage: meshguard-wasm-trim IN.wasm OUT.wasm --keep name,name,... (names: {OPTIONAL:?})"
        );
    };
    let keep: Vec<&str> = keep.split(',').filter(|k| !k.is_empty()).collect();
    if let Some(unknown) = keep.iter().find(|k| !OPTIONAL.contains(k)) {
        bail!("--keep {unknown:?}: not an optional callback (names: {OPTIONAL:?})");
    }
    let mut module =
        walrus::Module::from_file(input).with_context(|| format!("reading {input}"))?;
    let removed: Vec<(walrus::ExportId, String)> = module
        .exports
        .iter()
        .filter_map(|e| {
            let short = e.name.strip_prefix("proxy_on_")?;
            (OPTIONAL.contains(&short) && !keep.contains(&short)).then(|| (e.id(), e.name.clone()))
        })
        .collect();
    for (id, _) in &removed {
        module.exports.delete(*id);
    }
    walrus::passes::gc::run(&mut module);
    module
        .emit_wasm_file(output)
        .with_context(|| format!("writing {output}"))?;
    let names: Vec<&str> = removed.iter().map(|(_, n)| n.as_str()).collect();
    println!(
        "{output}: removed {} callback exports: {}",
        names.len(),
        names.join(" ")
    );
    Ok(())
}
