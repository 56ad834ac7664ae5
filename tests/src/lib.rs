//! test support (in progress).
