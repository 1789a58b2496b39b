//! The state conformance suite (placeholder filled below).
