//! Unit tests of `ComponentHost`'s reconnect in place, through the supervisor and the directory
//! as the sidecar runs them. The component is a purpose-built state store whose first instance
//! never answers the probe and whose later ones do: real backends (tests/it/component_health.rs)
//! heal inside their drivers, so only such a component reaches the fresh-instance path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::directory::{ComponentState, DirectoryHandle};
use super::registry::Registry;
use super::state::{DeleteRequest, Feature, GetRequest, SetRequest, StateStore, StoreError, StoredItem};
use super::supervisor::start_test_supervisor;
use crate::config::ComponentSpec;

static BUILT: AtomicUsize = AtomicUsize::new(0);
static CLOSED: AtomicUsize = AtomicUsize::new(0);

/// Instance `n` answers every get with `n`; instance 1 fails every probe.
struct Generation(usize);

#[async_trait]
impl StateStore for Generation {
    fn features(&self) -> &'static [Feature] {
        &[]
    }
    async fn get(&self, _req: GetRequest) -> Result<Option<StoredItem>, StoreError> {
        Ok(Some(StoredItem { data: Bytes::from(self.0.to_string()), ..Default::default() }))
    }
    async fn set(&self, _req: SetRequest) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _req: DeleteRequest) -> Result<(), StoreError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        if self.0 == 1 {
            return Err(StoreError::Unavailable("generation 1 lost its backend".into()));
        }
        Ok(())
    }
    async fn close(&self) {
        CLOSED.fetch_add(1, Ordering::SeqCst);
    }
}

fn spec() -> ComponentSpec {
    ComponentSpec::new("gen", "state.generation-test")
}

async fn served_generation(directory: &DirectoryHandle) -> Option<String> {
    let entry = directory.load().state.get("gen").cloned()?;
    let item = entry.client.get(GetRequest { key: "k".into(), ..Default::default() }).await.ok()??;
    Some(String::from_utf8_lossy(&item.data).into_owned())
}

#[tokio::test]
async fn a_failing_instance_is_reported_then_replaced_in_place_and_closed() {
    let mut registry = Registry::default();
    registry.add_state(&["state.generation-test"], "v1", |_name, _md| {
        Box::pin(async { Ok(Arc::new(Generation(BUILT.fetch_add(1, Ordering::SeqCst) + 1)) as Arc<dyn StateStore>) })
    });
    let directory = DirectoryHandle::default();
    let sup = start_test_supervisor("host-test", registry, vec![spec()], &directory).await;
    assert_eq!(served_generation(&directory).await.as_deref(), Some("1"));

    let mut saw_failing = false;
    for _ in 0..100 {
        let d = directory.load();
        let status = d.components.iter().find(|c| c.name == "gen").unwrap().clone();
        if status.state == ComponentState::Failing {
            saw_failing = true;
            assert!(status.error.as_deref().unwrap_or_default().contains("generation 1 lost its backend"), "{status:?}");
            assert!(d.unhealthy().is_empty(), "failing after start leaves health alone");
            assert!(d.state.contains_key("gen"), "still serving while failing");
        }
        if served_generation(&directory).await.as_deref() == Some("2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_failing, "metadata showed the component failing before it was replaced");
    assert_eq!(served_generation(&directory).await.as_deref(), Some("2"), "the fresh instance serves");
    let d = directory.load();
    assert_eq!(d.components.iter().find(|c| c.name == "gen").unwrap().state, ComponentState::Ready);
    for _ in 0..40 {
        if CLOSED.load(Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(CLOSED.load(Ordering::SeqCst), 1, "the replaced instance was closed once it drained");
    sup.stop_all().await;
    assert_eq!(CLOSED.load(Ordering::SeqCst), 2, "stopping closes the live instance");
}
