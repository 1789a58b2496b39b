//! state.mysql against the real server (being written).
