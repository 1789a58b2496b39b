//! state.postgres against the real server (being written).
