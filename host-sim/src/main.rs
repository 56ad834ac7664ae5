//! `host-sim`: check a proxy-wasm module's imports, or run a scenario against it.
//!
//! ```text
//! host-sim imports MODULE.wasm            list imports; exit 1 if any is not provided
//! host-sim run MODULE.wasm --scenario FILE [--config FILE]
//!                                         run a JSON scenario, print a JSON-lines trace;
//!                                         exit 1 if an expectation fails
//! ```

use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "usage:
  host-sim imports MODULE.wasm
  host-sim run MODULE.wasm --scenario FILE [--config FILE]

imports  lists the module's imports and whether host-sim (like Envoy) provides each;
         exits 1 if any is missing.
run      runs a JSON scenario (see host-sim/README.md) and prints a JSON-lines trace of
         callbacks, header changes, local replies, callouts, metrics, logs and expectation
         results; exits 1 if an expectation fails, 2 on errors. --config replaces the
         scenario's plugin configuration with the file's contents.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "host-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let mut out = std::io::stdout().lock();
    match args.first().map(String::as_str) {
        Some("imports") => {
            let path = args.get(1).ok_or(USAGE)?;
            let imports = host_sim::imports_of(&read(path)?).map_err(|e| e.to_string())?;
            let mut missing = 0;
            for i in &imports {
                if !i.provided {
                    missing += 1;
                }
                let _ = writeln!(
                    out,
                    "{}.{}\t{}",
                    i.module,
                    i.name,
                    if i.provided { "provided" } else { "MISSING" }
                );
            }
            let _ = writeln!(out, "{} imports, {} missing", imports.len(), missing);
            Ok(if missing == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some("run") => {
            let path = args.get(1).ok_or(USAGE)?;
            let mut scenario_path = None;
            let mut config_path = None;
            let mut it = args.iter().skip(2);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--scenario" => scenario_path = it.next().cloned(),
                    "--config" => config_path = it.next().cloned(),
                    other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
                }
            }
            let scenario_path =
                scenario_path.ok_or(format!("--scenario FILE is required\n{USAGE}"))?;
            let text = String::from_utf8(read(&scenario_path)?)
                .map_err(|e| format!("{scenario_path}: {e}"))?;
            let scenario =
                host_sim::scenario::Scenario::from_json(&text).map_err(|e| e.to_string())?;
            let config = match config_path {
                Some(p) => Some(read(&p)?),
                None => None,
            };
            let module = host_sim::Module::from_file(path).map_err(|e| e.to_string())?;
            let outcome = scenario
                .run(module, config, &mut |v| {
                    let _ = writeln!(out, "{v}");
                })
                .map_err(|e| e.to_string())?;
            Ok(if outcome.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some("help" | "--help" | "-h") => {
            let _ = writeln!(out, "{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(USAGE.to_string()),
    }
}
