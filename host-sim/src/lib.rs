//! host-sim (in progress).
