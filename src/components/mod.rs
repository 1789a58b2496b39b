//! Components: the registry of implementations, typed metadata, the supervisor that runs one
//! host process per component instance, the directory snapshot the APIs read, and one folder per
//! building-block category.

pub mod directory;
pub mod metadata;
pub mod registry;
pub mod secretstores;
pub mod sqlite_pool;
pub mod starter;
pub mod state;
pub mod supervisor;
