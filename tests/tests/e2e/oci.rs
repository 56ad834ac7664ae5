//! OCI artifacts end to end: `meshguard-oci` packs `dist/`, skopeo pushes every image to a real
//! registry (Debian's `docker-registry`, CNCF distribution) and reads it back, and stock Envoy
//! loads a filter straight from the registry's blob URL (`vm_config.code.remote`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshguard_oci::blob::sha256_digest;
use meshguard_oci::media::{
    ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE, ANNOTATION_TITLE,
    ANNOTATION_VARIANT, ANNOTATION_VERSION, IMAGE_CONFIG, IMAGE_MANIFEST, LAYER_TAR_GZIP,
    WASM_CONFIG, WASM_CONTENT,
};
use meshguard_oci::{BUNDLE, BuildInfo, FILTERS, Layout, Packed, Variant, pack, pack_dist};
use meshguard_tests::registry::{Registry, skopeo};
use meshguard_tests::{Envoy, EnvoyConfig, Filter, Listener, h1, paths};
use serde_json::{Value, json};

/// Images go to `<registry>/meshguard/<filter>:<tag>`.
const REPO: &str = "meshguard";

fn dist() -> PathBuf {
    paths::wasm("load_shed")
        .unwrap()
        .parent()
        .unwrap()
        .to_owned()
}

/// A copy of the built modules in `dir` (a concurrent `./build.sh` may rewrite `dist/` while a
/// test runs; the copy keeps the inputs of one test fixed).
fn snapshot_dist(dir: &Path) -> PathBuf {
    let snap = dir.join("dist");
    fs::create_dir(&snap).unwrap();
    for name in FILTERS.iter().chain([&BUNDLE]) {
        let file = format!("{name}.wasm");
        if dist().join(&file).is_file() {
            fs::copy(dist().join(&file), snap.join(&file)).unwrap();
        }
    }
    snap
}

fn build_info() -> BuildInfo {
    BuildInfo::detect(&paths::workspace_root()).unwrap()
}

fn reference(registry: &Registry, p: &Packed) -> String {
    format!("docker://{}/{REPO}/{}:{}", registry.host(), p.name, p.tag)
}

/// `skopeo copy --preserve-digests` from the layout to the registry; returns the pushed digest.
fn push(registry: &Registry, p: &Packed, scratch: &Path) -> String {
    let digest_file = scratch.join(format!("{}-{}.digest", p.name, p.tag));
    skopeo(&[
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--digestfile",
        digest_file.to_str().unwrap(),
        &format!("oci:{}:{}", p.layout.display(), p.tag),
        &reference(registry, p),
    ])
    .unwrap();
    fs::read_to_string(digest_file).unwrap().trim().to_owned()
}

fn media_types(manifest: &Value) -> Vec<&str> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect()
}

#[test]
fn every_artifact_round_trips_through_a_real_registry() {
    let out = tempfile::tempdir().unwrap();
    let info = build_info();
    let packed = pack_dist(&snapshot_dist(out.path()), &out.path().join("oci"), &info).unwrap();
    assert!(packed.len() >= 2 * FILTERS.len(), "{packed:?}");
    let registry = Registry::start().unwrap();
    let pulled = out.path().join("pulled");
    fs::create_dir(&pulled).unwrap();
    for p in &packed {
        let what = format!("{} {}", p.name, p.tag);
        assert_eq!(push(&registry, p, out.path()), p.manifest_digest, "{what}");

        // The registry serves the exact manifest bytes that were built.
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &reference(&registry, p),
        ])
        .unwrap();
        let local = Layout::open(&p.layout).unwrap().manifest(&p.tag).unwrap().0;
        assert_eq!(raw.as_bytes(), local.bytes.as_slice(), "{what}");
        let manifest: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(manifest["mediaType"], IMAGE_MANIFEST, "{what}");
        let ann = &manifest["annotations"];
        assert_eq!(ann[ANNOTATION_VARIANT], p.variant.as_str(), "{what}");
        assert_eq!(ann[ANNOTATION_TITLE], p.name, "{what}");
        assert_eq!(ann[ANNOTATION_VERSION], info.version, "{what}");
        assert_eq!(ann[ANNOTATION_REVISION], info.revision, "{what}");
        assert_eq!(
            ann[ANNOTATION_CREATED],
            info.created_rfc3339().unwrap(),
            "{what}"
        );
        assert_eq!(ann[ANNOTATION_SOURCE], info.source, "{what}");

        match p.variant {
            Variant::Compat => {
                assert_eq!(media_types(&manifest), [LAYER_TAR_GZIP], "{what}");
                assert_eq!(manifest["config"]["mediaType"], IMAGE_CONFIG, "{what}");
                // A regular image: skopeo reads its config.
                let image: Value = serde_json::from_str(
                    &skopeo(&["inspect", "--tls-verify=false", &reference(&registry, p)]).unwrap(),
                )
                .unwrap();
                assert_eq!(image["Digest"], p.manifest_digest, "{what}");
                assert_eq!(image["Architecture"], "wasm", "{what}");
                assert_eq!(image["Os"], "wasip1", "{what}");
                assert_eq!(image["Labels"][ANNOTATION_VARIANT], "compat", "{what}");
            }
            Variant::Oci => {
                assert_eq!(
                    media_types(&manifest),
                    [WASM_CONFIG, WASM_CONTENT],
                    "{what}"
                );
                assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG, "{what}");
                assert_eq!(manifest["layers"][1]["digest"], p.module_digest, "{what}");
                let runtime: Value = serde_json::from_str(
                    &skopeo(&[
                        "inspect",
                        "--config",
                        "--raw",
                        "--tls-verify=false",
                        &reference(&registry, p),
                    ])
                    .unwrap(),
                )
                .unwrap();
                assert_eq!(
                    runtime,
                    json!({"type": "envoy_proxy", "abiVersions": ["proxy_abi_version_0_2_1"],
                           "config": {"root_ids": [p.name]}}),
                    "{what}"
                );
            }
        }

        // Pull into a new layout; the module comes back byte for byte (extracted by Istio's rules).
        let dest = pulled.join(&p.name);
        skopeo(&[
            "copy",
            "--quiet",
            "--preserve-digests",
            "--src-tls-verify=false",
            &reference(&registry, p),
            &format!("oci:{}:{}", dest.display(), p.tag),
        ])
        .unwrap();
        let back = Layout::open(&dest).unwrap();
        assert_eq!(
            back.manifest(&p.tag).unwrap().0.digest,
            p.manifest_digest,
            "{what}"
        );
        let module = back.module(&p.tag).unwrap();
        let packed_module = Layout::open(&p.layout).unwrap().module(&p.tag).unwrap();
        assert!(module == packed_module, "{what}: pulled module differs");
        assert_eq!(sha256_digest(&module), p.module_digest, "{what}");
    }
}

/// Every file of a layout tree, by relative path.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = fs::read(&path).unwrap();
                files.insert(path.strip_prefix(root).unwrap().to_owned(), bytes);
            }
        }
    }
    files
}

#[test]
fn packing_twice_gives_identical_layouts_and_digests() {
    let input = tempfile::tempdir().unwrap();
    let dist = snapshot_dist(input.path());
    let info = build_info();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = pack_dist(&dist, a.path(), &info).unwrap();
    let second = pack_dist(&dist, b.path(), &info).unwrap();
    let digests = |v: &[Packed]| -> Vec<(String, String, String)> {
        v.iter()
            .map(|p| {
                (
                    p.tag.clone(),
                    p.manifest_digest.clone(),
                    p.module_digest.clone(),
                )
            })
            .collect()
    };
    assert_eq!(digests(&first), digests(&second));
    let (ta, tb) = (tree(a.path()), tree(b.path()));
    assert!(ta.len() >= FILTERS.len() * 8, "{:?}", ta.keys());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (path, bytes) in &ta {
        assert!(
            bytes == &tb[path],
            "{} differs between two builds",
            path.display()
        );
    }
    // The input that names the source changes the digests (the test can tell).
    let mut other = info.clone();
    other.revision = "0000000000000000000000000000000000000000".into();
    let c = tempfile::tempdir().unwrap();
    let third = pack_dist(&dist, c.path(), &other).unwrap();
    assert_ne!(first[0].manifest_digest, third[0].manifest_digest);
    assert_eq!(first[0].module_digest, third[0].module_digest);
}

/// The load_shed filter with its code fetched from `uri` and pinned by `sha256`.
fn remote_filter(uri: &str, sha256: &str) -> Value {
    let mut filter = Filter::meshguard("load_shed").unwrap().to_json();
    filter["typed_config"]["config"]["vm_config"]["code"] = json!({"remote": {
        "http_uri": {"uri": uri, "cluster": "registry", "timeout": "10s"},
        "sha256": sha256,
        "retry_policy": {
            "num_retries": 3,
            "retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"},
        },
    }});
    filter
}

fn envoy_config(registry: &Registry, filter: Value) -> EnvoyConfig {
    let mut listener = Listener::new("remote").direct_response(200, "served");
    listener.native_filters.push(filter);
    let mut cfg = EnvoyConfig::new(None).listener(listener);
    let addr = registry.addr();
    cfg.clusters.push(json!({
        "name": "registry",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "registry", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}
        }}]}]},
    }));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_envoy_loads_a_filter_from_the_registry_blob_url() {
    let out = tempfile::tempdir().unwrap();
    let wasm = fs::read(dist().join("load_shed.wasm")).unwrap();
    let packed = pack("load_shed", &wasm, &build_info(), out.path()).unwrap();
    let oci = packed.iter().find(|p| p.variant == Variant::Oci).unwrap();
    let registry = Registry::start().unwrap();
    push(&registry, oci, out.path());
    let url = registry.blob_url(&format!("{REPO}/load_shed"), &oci.module_digest);
    let sha256 = oci.module_digest.trim_start_matches("sha256:");

    let cfg = envoy_config(&registry, remote_filter(&url, sha256));
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    let r = h1::exchange(
        envoy.listener("remote"),
        &h1::head("GET", "/", &[(b"host", b"x")]),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "served");
    assert!(
        envoy.log().contains("meshguard load_shed: configured"),
        "{}",
        envoy.log()
    );
    envoy
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.get("wasmcustom.meshguard.load_shed.admitted.critical")
                .is_some_and(|n| *n >= 1)
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_refuses_a_fetched_module_whose_sha256_does_not_match() {
    let out = tempfile::tempdir().unwrap();
    let wasm = fs::read(dist().join("load_shed.wasm")).unwrap();
    let packed = pack("load_shed", &wasm, &build_info(), out.path()).unwrap();
    let oci = packed.iter().find(|p| p.variant == Variant::Oci).unwrap();
    let registry = Registry::start().unwrap();
    push(&registry, oci, out.path());
    let url = registry.blob_url(&format!("{REPO}/load_shed"), &oci.module_digest);
    // The manifest digest is what Istio pins for oci://, not what Envoy pins for the module.
    let wrong = oci.manifest_digest.trim_start_matches("sha256:");
    let cfg = envoy_config(&registry, remote_filter(&url, wrong));
    let envoy = tokio::task::spawn_blocking(move || Envoy::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    // Envoy fetches (and retries), rejects the bytes, and the plugin fails closed: every request
    // gets a 503 instead of reaching the route.
    let r = h1::exchange(
        envoy.listener("remote"),
        &h1::head("GET", "/", &[(b"host", b"x")]),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_ne!(r.text(), "served");
    let log = envoy.log();
    assert!(log.contains("Plugin load_shed failed to load"), "{log}");
    assert!(!log.contains("meshguard load_shed: configured"), "{log}");
}
