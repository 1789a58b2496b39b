//! Configuration inputs of a sidecar: command-line flags, the `Configuration` resource, the
//! resources (components, HTTP endpoints, resiliency) and rapr's home folder. Pure parsing: no
//! file or network I/O here; `sidecar/load.rs` reads the files and hands their text over.

pub mod component;
pub mod configuration;
pub mod duration;
pub mod flags;
pub mod flags_daprd;
pub mod flags_validate;
pub mod home;
pub mod http_endpoint;
pub mod resources;
pub mod subscription;
pub mod tracing_spec;

pub use component::{ComponentSpec, MetadataItem, SecretKeyRef};
pub use configuration::ConfigurationSpec;
pub use flags::SidecarArgs;
pub use home::rapr_home;
pub use resources::{parse_configuration, ResourceError, Resources};
