//! Configuration inputs of a sidecar: command-line flags, the `Configuration` resource and the
//! resources (components) loaded from `--resources-path`.

pub mod component;
pub mod configuration;
pub mod duration;
pub mod flags;
pub mod http_endpoint;
pub mod resources;

pub use component::{ComponentSpec, MetadataItem, SecretKeyRef};
pub use configuration::ConfigurationSpec;
pub use flags::SidecarArgs;
pub use resources::{load_configuration, load_resources, ResourceError, Resources};
