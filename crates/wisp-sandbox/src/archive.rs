//! archive (in progress).
