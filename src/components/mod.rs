//! Components: the categories and the registry of implementations, typed metadata, the generic
//! host process per component instance and the supervisor that runs them, the directory snapshot
//! the APIs read, the one `secretKeyRef` resolver, and one folder per building-block category
//! (docs/architecture.md).

pub mod categories;
pub mod category;
#[cfg(test)]
mod category_tests;
pub mod directory;
pub mod host;
#[cfg(test)]
mod host_tests;
pub mod metadata;
pub mod pubsub;
pub mod registry;
pub mod secret_refs;
pub mod secretstores;
pub mod sqlite_pool;
pub mod starter;
pub mod state;
pub mod supervisor;
