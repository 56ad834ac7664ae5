//! `overload` (being written).

use anyhow::{Result, bail};

use crate::Opts;

pub fn run(_opts: &Opts) -> Result<()> {
    bail!("not written yet")
}
