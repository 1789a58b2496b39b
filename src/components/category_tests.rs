//! A throwaway category, `echo.*`, defined only here and in its one `#[cfg(test)]` line of
//! `categories.rs`: the test runs it through the real registry, supervisor, host and directory,
//! so it compiles and passes only while adding a category needs nothing else in the machinery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;


use super::category::{BoxFuture, Category, CategoryKind, EntryContext};
use super::directory::{ComponentState, DirectoryHandle};
use super::metadata::ComponentMetadata;
use super::registry::{ComponentError, Registry};
use super::supervisor::start_test_supervisor;
use crate::config::ComponentSpec;

static CLOSED: AtomicUsize = AtomicUsize::new(0);

/// The category's contract (what a real category's trait is to its facade).
pub trait Echo: Send + Sync {
    /// Its answer to `text`.
    fn echo(&self, text: &str) -> String;
}

/// The one implementation: upper-cases.
struct Upper;

impl Echo for Upper {
    fn echo(&self, text: &str) -> String {
        text.to_uppercase()
    }
}

/// An echo factory.
pub type EchoFactory = fn(String, ComponentMetadata) -> Result<Arc<dyn Echo>, ComponentError>;

/// The `echo.*` category.
pub struct EchoKind;

impl CategoryKind for EchoKind {
    const PREFIX: &'static str = "echo";
    type Handle = dyn Echo;
    type Factory = EchoFactory;
    type Entry = Arc<dyn Echo>;

    fn register(reg: &mut Registry) {
        reg.add_echo(&["echo.upper"], "v1", |_name, _md| Ok(Arc::new(Upper) as Arc<dyn Echo>));
    }

    fn build(factory: EchoFactory, name: String, md: ComponentMetadata) -> BoxFuture<'static, Result<Arc<dyn Echo>, ComponentError>> {
        Box::pin(std::future::ready(factory(name, md)))
    }
    fn capabilities(_handle: &dyn Echo) -> Vec<&'static str> {
        vec!["ECHO"]
    }
    fn ping(_handle: &dyn Echo) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn close(_handle: &dyn Echo) -> BoxFuture<'_, ()> {
        CLOSED.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(()))
    }
    fn entry(handle: Arc<dyn Echo>, _ctx: EntryContext<'_>) -> Arc<dyn Echo> {
        handle
    }
}

#[tokio::test]
async fn a_category_defined_in_test_code_runs_through_the_whole_machinery() {
    assert_eq!(Category::of("echo.upper"), Some(Category::Echo));
    assert_eq!(Category::Echo.as_str(), "echo");

    let registry = Registry::default();
    let directory = DirectoryHandle::default();
    let sup = start_test_supervisor("category-test", registry, vec![ComponentSpec::new("loud", "echo.upper"), ComponentSpec::new("odd", "echo.nosuch"), ComponentSpec::new("st", "state.in-memory")], &directory).await;

    let d = directory.load();
    assert_eq!(d.echoes.get("loud").map(|e| e.echo("hi")).as_deref(), Some("HI"), "published in its own typed map");
    assert!(d.state.contains_key("st") && !d.state.contains_key("loud"), "the other categories' maps are untouched");
    let loud = d.components.iter().find(|c| c.name == "loud").unwrap();
    assert_eq!((loud.state, loud.capabilities.clone()), (ComponentState::Ready, vec!["ECHO"]));
    let why = d.echoes_unavailable.get("odd").cloned().unwrap_or_default();
    assert!(why.contains("echo.upper/v1") && !why.contains("state."), "an unknown type lists its own category's types: {why}");
    assert!(!d.state_unavailable.contains_key("odd"));

    sup.stop_all().await;
    assert_eq!(CLOSED.load(Ordering::SeqCst), 1, "stopping closes the instance through its kind");
}
