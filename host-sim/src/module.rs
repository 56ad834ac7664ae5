//! Loading `.wasm` modules: one engine and a compiled-module cache per process.
//!
//! Compiling a filter with Cranelift takes far longer than running a test against it, and
//! tests run in parallel threads, so compiled modules are cached by the hash of their bytes
//! (and compared byte-for-byte on a hit). The cache holds only immutable compiled code; every
//! [`crate::Envoy`] gets its own stores, so tests never share mutable state.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::{Engine, ExternType, InstancePre, Linker};

use crate::error::{Error, Result};
use crate::host::{self, HostState};

/// The proxy-wasm ABI version a module declares through its `proxy_abi_version_*` export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_1_0`.
    V0_1_0,
    /// `proxy_abi_version_0_2_0`.
    V0_2_0,
    /// `proxy_abi_version_0_2_1`.
    V0_2_1,
}

/// One import of a module and whether host-sim provides it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Import {
    /// Import module (`env`, `wasi_snapshot_preview1`, ...).
    pub module: String,
    /// Function (or other item) name.
    pub name: String,
    /// Whether host-sim (like Envoy) provides it.
    pub provided: bool,
}

pub(crate) struct Compiled {
    pub(crate) module: wasmtime::Module,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) abi: AbiVersion,
    pub(crate) name: String,
}

/// A compiled proxy-wasm module, ready to be started in any number of simulated Envoys.
///
/// Cloning is cheap.
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: Arc<Compiled>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.inner.name)
            .field("abi", &self.inner.abi)
            .finish()
    }
}

type Slot = Arc<OnceLock<std::result::Result<Arc<Compiled>, String>>>;
/// Modules whose bytes hash the same: (bytes, compiled slot).
type Bucket = Vec<(Arc<[u8]>, Slot)>;

struct Cache {
    engine: Engine,
    linker: Linker<HostState>,
    names: Vec<(&'static str, &'static str)>,
    modules: Mutex<HashMap<u64, Bucket>>,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        // Fuel makes a runaway guest (an infinite loop) trap deterministically instead of
        // hanging the test; it is refilled before every call into the VM.
        config.consume_fuel(true);
        // `HOST_SIM_PERFMAP=1`: wasmtime writes /tmp/perf-<pid>.map, so `perf record` names
        // the guest's functions (build the module with `CARGO_PROFILE_RELEASE_STRIP=false`).
        if std::env::var_os("HOST_SIM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Only fails for unsupported configurations; this one is supported.
        let engine = Engine::new(&config).unwrap_or_default();
        let (linker, names) = host::linker(&engine);
        Cache {
            engine,
            linker,
            names,
            modules: Mutex::new(HashMap::new()),
        }
    })
}

pub(crate) fn engine() -> &'static Engine {
    &cache().engine
}

pub(crate) fn provided_names() -> &'static [(&'static str, &'static str)] {
    &cache().names
}

/// Every `(module, name)` import host-sim provides: the 39 proxy-wasm 0.2.1 host functions,
/// the v0.1 names, and WASI preview1 under `wasi_snapshot_preview1` and `wasi_unstable`.
pub fn provided_imports() -> &'static [(&'static str, &'static str)] {
    provided_names()
}

impl Module {
    /// Compiles (or fetches from the cache) a module from its bytes.
    ///
    /// # Errors
    /// [`Error::Compile`] for invalid bytes, [`Error::MissingImports`] when the module imports
    /// something Envoy does not provide, [`Error::Abi`] when it is not a proxy-wasm module.
    pub fn from_bytes(bytes: &[u8]) -> Result<Module> {
        Self::from_bytes_named(bytes, "module")
    }

    /// Reads and compiles a `.wasm` file.
    ///
    /// # Errors
    /// As [`Module::from_bytes`], plus [`Error::Io`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Module> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::from_bytes_named(&bytes, &name)
    }

    /// Finds `<name>.wasm` with [`find_wasm`] and loads it.
    ///
    /// # Errors
    /// [`Error::WasmNotFound`] (the message says to run `./build.sh`), or as
    /// [`Module::from_file`].
    pub fn load(name: &str) -> Result<Module> {
        Self::from_file(find_wasm(name)?)
    }

    fn from_bytes_named(bytes: &[u8], name: &str) -> Result<Module> {
        let c = cache();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let key = h.finish();
        let slot = {
            let mut map = c.modules.lock().unwrap_or_else(|e| e.into_inner());
            let bucket = map.entry(key).or_default();
            match bucket.iter().find(|(b, _)| **b == *bytes) {
                Some((_, slot)) => slot.clone(),
                None => {
                    let slot: Slot = Arc::new(OnceLock::new());
                    bucket.push((Arc::from(bytes), slot.clone()));
                    slot
                }
            }
        };
        let compiled = slot.get_or_init(|| {
            compile(c, bytes, name)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        match compiled {
            Ok(inner) => Ok(Module {
                inner: inner.clone(),
            }),
            Err(_) => compile(c, bytes, name).map(|inner| Module {
                inner: Arc::new(inner),
            }),
        }
    }

    /// The module's name (file stem).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The declared ABI version.
    pub fn abi_version(&self) -> AbiVersion {
        self.inner.abi
    }

    /// Every import and whether host-sim provides it.
    pub fn imports(&self) -> Vec<Import> {
        list_imports(&self.inner.module)
    }
}

fn list_imports(module: &wasmtime::Module) -> Vec<Import> {
    let provided = host::provided_imports();
    module
        .imports()
        .map(|i| Import {
            module: i.module().to_string(),
            name: i.name().to_string(),
            provided: matches!(i.ty(), ExternType::Func(_))
                && provided
                    .iter()
                    .any(|(m, n)| *m == i.module() && *n == i.name()),
        })
        .collect()
}

/// Lists a module's imports without requiring that they are all provided (for the CLI).
///
/// # Errors
/// [`Error::Compile`] when the bytes are not a valid module.
pub fn imports_of(bytes: &[u8]) -> Result<Vec<Import>> {
    let module =
        wasmtime::Module::new(engine(), bytes).map_err(|e| Error::Compile(format!("{e:#}")))?;
    Ok(list_imports(&module))
}

fn compile(c: &Cache, bytes: &[u8], name: &str) -> Result<Compiled> {
    let module =
        wasmtime::Module::new(&c.engine, bytes).map_err(|e| Error::Compile(format!("{e:#}")))?;
    let missing: Vec<String> = list_imports(&module)
        .into_iter()
        .filter(|i| !i.provided)
        .map(|i| format!("{}.{}", i.module, i.name))
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingImports(missing));
    }
    let abi = [
        "proxy_abi_version_0_2_1",
        "proxy_abi_version_0_2_0",
        "proxy_abi_version_0_1_0",
    ]
    .iter()
    .zip([AbiVersion::V0_2_1, AbiVersion::V0_2_0, AbiVersion::V0_1_0])
    .find(|(n, _)| module.get_export(n).is_some())
    .map(|(_, v)| v)
    .ok_or_else(|| Error::Abi("Missing or unknown Proxy-Wasm ABI version".into()))?;
    if module.get_export("malloc").is_none()
        && module.get_export("proxy_on_memory_allocate").is_none()
    {
        return Err(Error::Abi("Wasm module is missing malloc function.".into()));
    }
    let pre = c
        .linker
        .instantiate_pre(&module)
        .map_err(|e| Error::Compile(format!("{e:#}")))?;
    Ok(Compiled {
        module,
        pre,
        abi,
        name: name.to_string(),
    })
}

/// The places [`find_wasm`] looks, in order.
pub fn wasm_search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MESHGUARD_WASM_DIR") {
        dirs.push(PathBuf::from(d));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // `dist/` first: what `./build.sh` ships (trimmed to the callbacks each filter
    // implements), then cargo's own output.
    dirs.push(workspace.join("dist"));
    dirs.push(workspace.join("dist").join("fixtures"));
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        let t = if t.is_relative() {
            workspace.join(t)
        } else {
            t
        };
        dirs.push(t.join("wasm32-wasip1").join("release"));
    }
    dirs.push(
        workspace
            .join("target")
            .join("wasm32-wasip1")
            .join("release"),
    );
    dirs
}

/// Finds `<name>.wasm` (dashes in `name` may also be underscores, as cargo names artifacts) in
/// `$MESHGUARD_WASM_DIR`, `<workspace>/dist`, `<workspace>/dist/fixtures`,
/// `$CARGO_TARGET_DIR/wasm32-wasip1/release` and `<workspace>/target/wasm32-wasip1/release`.
///
/// # Errors
/// [`Error::WasmNotFound`] listing every path tried, telling to run `./build.sh`.
pub fn find_wasm(name: &str) -> Result<PathBuf> {
    let stem = name.strip_suffix(".wasm").unwrap_or(name);
    let mut names = vec![stem.to_string()];
    if stem.contains('-') {
        names.push(stem.replace('-', "_"));
    }
    let mut searched = Vec::new();
    for dir in wasm_search_dirs() {
        for n in &names {
            let p = dir.join(format!("{n}.wasm"));
            if p.is_file() {
                return Ok(p);
            }
            searched.push(p);
        }
    }
    Err(Error::WasmNotFound {
        name: stem.to_string(),
        searched,
    })
}
