//! `state.redis` (being written).

use crate::components::registry::Registry;

/// Registers this store's Dapr type names with the registry.
pub fn register(_reg: &mut Registry) {}
