//! `host-sim`: simulated requests per second per core in host-sim, next to Envoy's requests per
//! CPU-second for the same module (to be written).

use anyhow::{Result, bail};

use crate::Opts;

pub fn run(_opts: &Opts) -> Result<()> {
    bail!("not written yet")
}
