//! openraft's own storage conformance suite against the SQLite log store and the placement
//! state machine, on a file in a temporary directory.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::log_store::{Db, DbLocation, SqliteLogStore};
use super::state_machine::PlacementStateMachine;
use super::{NodeId, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, SqliteLogStore, PlacementStateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, SqliteLogStore, PlacementStateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let at = DbLocation::in_dir(Some(dir.path()));
        let log = SqliteLogStore::open(at.clone()).unwrap();
        let (sm, _) = PlacementStateMachine::open(Db::open(at).unwrap()).await.unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn the_stores_pass_openraft_s_suite() {
    Suite::test_all(Builder).unwrap();
}
