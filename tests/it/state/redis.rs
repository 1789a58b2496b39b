//! state.redis against the real server (being written).
