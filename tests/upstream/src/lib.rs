//! test upstream (in progress).
