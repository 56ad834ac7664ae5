//! `meshguard-bench <name>`: meshguard's benchmarks, each printing meshguard next to its anchor
//! measured in the same run. Run through `./build.sh bench <name>`.

use std::path::PathBuf;

use anyhow::{Result, bail};

mod breaker;
mod footprint;
mod host_sim;
mod overhead;
mod overload;
mod ratelimit;
mod soak;
mod upstream_proc;

/// Options common to every benchmark.
#[derive(Debug)]
pub struct Opts {
    /// Remaining `--key value` arguments.
    pub args: Vec<String>,
}

impl Opts {
    /// The value of `--name`, parsed, or `default`.
    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        let flag = format!("--{name}");
        match self.args.iter().position(|a| *a == flag) {
            Some(i) => match self.args.get(i + 1).map(|v| v.parse::<T>()) {
                Some(Ok(v)) => Ok(v),
                _ => bail!("{flag} needs a valid value"),
            },
            None => Ok(default),
        }
    }
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        bail!(
            "usage: meshguard-bench <overhead|footprint|overload|breaker|ratelimit|host-sim|soak> [--envoy PATH] [--dist DIR] [options]"
        );
    }
    let name = args.remove(0);
    // --envoy and --dist configure the harness through its environment variables.
    for (flag, var) in [
        ("--envoy", "MESHGUARD_ENVOY"),
        ("--dist", "MESHGUARD_WASM_DIR"),
    ] {
        if let Some(i) = args.iter().position(|a| a == flag)
            && let Some(v) = args.get(i + 1).cloned()
        {
            // SAFETY of set_var: single-threaded at this point (before any runtime starts).
            unsafe { std::env::set_var(var, PathBuf::from(v)) };
            args.drain(i..=i + 1);
        }
    }
    // A benchmark stopped with Ctrl-C or `kill` takes its Envoys and upstreams with it.
    meshguard_tests::children::kill_on_signal()?;
    let opts = Opts { args };
    match name.as_str() {
        "overhead" => overhead::run(&opts),
        "overload" => overload::run(&opts),
        "breaker" => breaker::run(&opts),
        "ratelimit" => ratelimit::run(&opts),
        "host-sim" => host_sim::run(&opts),
        "footprint" => footprint::run(&opts),
        "soak" => soak::run(&opts),
        other => bail!(
            "unknown benchmark {other:?} (have: overhead, footprint, overload, breaker, ratelimit, host-sim, soak)"
        ),
    }
}
