//! `meshguard-oci`: packs `dist/*.wasm` into reproducible OCI image layouts under `dist/oci/`.
//!
//! ```text
//! meshguard-oci [--dist DIR] [--out DIR] [--revision REV] [--created EPOCH]
//! ```
//!
//! Defaults: `--dist dist`, `--out <dist>/oci`, revision `git rev-parse HEAD` (or `unknown`),
//! created `SOURCE_DATE_EPOCH`, else the commit time of `HEAD`, else 0. Prints one line per
//! image: `artifact=… variant=… tag=… manifest=sha256:… module=sha256:… bytes=… layout=…`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use meshguard_oci::{BuildInfo, pack_dist};

struct Args {
    dist: PathBuf,
    out: Option<PathBuf>,
    revision: Option<String>,
    created: Option<i64>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let mut parsed = Args {
        dist: PathBuf::from("dist"),
        out: None,
        revision: None,
        created: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dist" => parsed.dist = value()?.into(),
            "--out" => parsed.out = Some(value()?.into()),
            "--revision" => parsed.revision = Some(value()?),
            "--created" => {
                let v = value()?;
                parsed.created = Some(v.parse().with_context(|| format!("--created {v}"))?);
            }
            "-h" | "--help" => {
                println!(
                    "usage: meshguard-oci [--dist DIR] [--out DIR] [--revision REV] [--created EPOCH]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(parsed)
}

fn run() -> Result<()> {
    let args = parse(std::env::args().skip(1))?;
    let mut info = BuildInfo::detect(&args.dist)?;
    if let Some(r) = args.revision {
        info.revision = r;
    }
    if let Some(c) = args.created {
        info.created = c;
    }
    let out = args.out.unwrap_or_else(|| args.dist.join("oci"));
    eprintln!(
        "meshguard-oci: version {} revision {} created {}",
        info.version,
        info.revision,
        info.created_rfc3339()?
    );
    for packed in pack_dist(&args.dist, &out, &info)? {
        println!("{}", packed.line());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshguard-oci: {e:#}");
            ExitCode::FAILURE
        }
    }
}
