//! `CategoryKind`, what each building-block category tells the component machinery about itself,
//! and `define_categories!`, which turns the one list of categories (`categories.rs`) into the
//! closed enums and typed maps the machinery needs.
//!
//! The machinery (registry, host, supervisor, directory) is generic over `Category` and
//! `Instance`, but Rust needs closed, typed lists to keep each category's trait object without
//! `Any`: the enums `Category`, `Instance` and the registry's `Factory`, the registry's `add_*`
//! methods and the `Directory`'s per-category maps. The macro writes all of them from one line per
//! category, so adding a category is its folder (with its `CategoryKind`), its facade and that line
//! (docs/architecture.md §1.2).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::state_keys::KeyPrefix;
use crate::components::metadata::ComponentMetadata;
use crate::components::registry::{ComponentError, Registry};

pub use crate::components::categories::{Category, Instance};

/// A boxed `Send` future (the probe runs it on its own task).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the supervisor knows when it publishes a ready instance into the directory.
pub struct EntryContext<'a> {
    /// The component call deadline (`--component-call-timeout`).
    pub call_timeout: Duration,
    /// The live instance's in-flight tracker (a draining host waits for the calls holding it).
    pub in_flight: &'a TaskTracker,
    /// How keys are prefixed for this component (state stores use it).
    pub prefix: &'a KeyPrefix,
    /// Fires when the host retires the live instance (replaced or stopping), before it drains:
    /// long-lived work on it (a pub/sub subscription) stops there.
    pub retired: &'a CancellationToken,
}

/// One building-block category, implemented by a marker type in the category's folder.
pub trait CategoryKind: 'static {
    /// Dapr's name of the category, the type's prefix (`state` for `state.redis`).
    const PREFIX: &'static str;
    /// The category's trait object (`dyn StateStore`).
    type Handle: ?Sized + Send + Sync + 'static;
    /// How one implementation is built (kept typed per category, so no `Any` is needed).
    type Factory: Copy + Send + Sync + 'static;
    /// What the directory holds per ready component for the category's facade.
    type Entry: Clone + Send + Sync + 'static;

    /// Registers the implementations rapr ships for the category (`Registry::default` calls it).
    fn register(reg: &mut Registry);
    /// Runs a factory: name and metadata to an initialised instance.
    fn build(factory: Self::Factory, name: String, md: ComponentMetadata) -> BoxFuture<'static, Result<Arc<Self::Handle>, ComponentError>>;
    /// Capabilities for `/v1.0/metadata`.
    fn capabilities(handle: &Self::Handle) -> Vec<&'static str>;
    /// Whether the backend answers (the host's health probe).
    fn ping(handle: &Self::Handle) -> BoxFuture<'_, Result<(), String>>;
    /// Releases the backend's resources (after the in-flight calls drained).
    fn close(handle: &Self::Handle) -> BoxFuture<'_, ()>;
    /// The facade's view of a ready instance, published in the directory.
    fn entry(handle: Arc<Self::Handle>, ctx: EntryContext<'_>) -> Self::Entry;
}

/// Generates, from one line per category, `Category`, `Instance`, the registry's `Factory` and
/// `add_*` methods, and `Directory` with each category's typed maps (ready and unavailable).
/// Invoked once, in `categories.rs`.
macro_rules! define_categories {
    ($( $(#[doc = $doc:literal])* $(#[cfg($cfg:meta)])? $variant:ident => $kind:ty { ready: $ready:ident, unavailable: $unavailable:ident, add: $add:ident } ),+ $(,)?) => {
        use std::collections::BTreeMap;
        use std::sync::Arc;

        use $crate::components::category::{CategoryKind, EntryContext};
        use $crate::components::directory::ComponentStatus;
        use $crate::components::metadata::ComponentMetadata;
        use $crate::components::registry::{ComponentError, Registry};
        use $crate::runtime::metrics::Metrics;

        /// A building block with components rapr implements.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Category {
            $( $(#[doc = $doc])* $(#[cfg($cfg)])? $variant, )+
        }

        impl Category {
            /// The category of a Dapr type (`state.redis` -> `State`); `None` for a building
            /// block rapr does not implement yet (shown as unsupported, never loaded).
            pub fn of(type_name: &str) -> Option<Self> {
                let prefix = type_name.split('.').next().unwrap_or_default();
                match prefix {
                    $( $(#[cfg($cfg)])? p if p == <$kind as CategoryKind>::PREFIX => Some(Category::$variant), )+
                    _ => None,
                }
            }

            /// Dapr's name of the category (the type's prefix).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $(#[cfg($cfg)])? Category::$variant => <$kind as CategoryKind>::PREFIX, )+
                }
            }
        }

        /// One initialised component: the category's trait object.
        #[derive(Clone)]
        pub enum Instance {
            $( $(#[doc = $doc])* $(#[cfg($cfg)])? $variant(Arc<<$kind as CategoryKind>::Handle>), )+
        }

        impl Instance {
            /// Its category.
            pub fn category(&self) -> Category {
                match self {
                    $( $(#[cfg($cfg)])? Instance::$variant(_) => Category::$variant, )+
                }
            }

            /// Capabilities for `/v1.0/metadata`.
            pub fn capabilities(&self) -> Vec<&'static str> {
                match self {
                    $( $(#[cfg($cfg)])? Instance::$variant(h) => <$kind as CategoryKind>::capabilities(&**h), )+
                }
            }

            /// Whether the backend answers (the host's health probe).
            pub async fn ping(&self) -> Result<(), String> {
                match self {
                    $( $(#[cfg($cfg)])? Instance::$variant(h) => <$kind as CategoryKind>::ping(&**h).await, )+
                }
            }

            /// Releases the backend's resources (after the in-flight calls drained).
            pub async fn close(&self) {
                match self {
                    $( $(#[cfg($cfg)])? Instance::$variant(h) => <$kind as CategoryKind>::close(&**h).await, )+
                }
            }
        }

        /// How one implementation is built: a category's factory, kept typed so no `Any` is needed.
        #[derive(Clone, Copy)]
        pub(crate) enum Factory {
            $( $(#[cfg($cfg)])? $variant(<$kind as CategoryKind>::Factory), )+
        }

        impl Factory {
            /// Builds and initialises the instance.
            pub(crate) async fn build(self, name: String, md: ComponentMetadata) -> Result<Instance, ComponentError> {
                match self {
                    $( $(#[cfg($cfg)])? Factory::$variant(f) => <$kind as CategoryKind>::build(f, name, md).await.map(Instance::$variant), )+
                }
            }
        }

        impl Registry {
            /// Registers every category's implementations (`CategoryKind::register`).
            pub(crate) fn register_categories(&mut self) {
                $( $(#[cfg($cfg)])? <$kind as CategoryKind>::register(self); )+
            }

            $(
                $(#[cfg($cfg)])?
                #[doc = concat!("Registers a `", stringify!($variant), "` factory under type names and a version.")]
                pub fn $add(&mut self, types: &[&str], version: &str, factory: <$kind as CategoryKind>::Factory) {
                    self.add(Category::$variant, types, version, Factory::$variant(factory));
                }
            )+
        }

        /// One published snapshot: per-category typed maps of ready components (the supervisor
        /// fills them from each host's `Instance`), plus every component's status.
        #[derive(Clone, Default)]
        pub struct Directory {
            $(
                $(#[cfg($cfg)])?
                #[doc = concat!("Ready `", stringify!($variant), "` components by name.")]
                pub $ready: BTreeMap<String, <$kind as CategoryKind>::Entry>,
                $(#[cfg($cfg)])?
                #[doc = concat!("`", stringify!($variant), "` components that exist but are not ready (failed or restarting), with why.")]
                pub $unavailable: BTreeMap<String, String>,
            )+
            /// Every component and failed resource, in load order.
            pub components: Vec<ComponentStatus>,
            /// Where the facades count their component calls (daprd's `dapr_component_*`
            /// metrics); `None` with metrics off. Published with the stores, so the facades that
            /// read the stores from this snapshot need no other handle.
            pub metrics: Option<Metrics>,
        }

        impl Directory {
            /// Publishes a ready instance in its category's map.
            pub(crate) fn insert_ready(&mut self, name: String, instance: &Instance, ctx: EntryContext<'_>) {
                match instance {
                    $( $(#[cfg($cfg)])? Instance::$variant(h) => { self.$ready.insert(name, <$kind as CategoryKind>::entry(Arc::clone(h), ctx)); } )+
                }
            }

            /// Records a component of `category` that is not ready, with why.
            pub(crate) fn insert_unavailable(&mut self, name: String, category: Category, why: String) {
                match category {
                    $( $(#[cfg($cfg)])? Category::$variant => { self.$unavailable.insert(name, why); } )+
                }
            }
        }
    };
}

pub(crate) use define_categories;
