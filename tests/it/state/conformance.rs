//! Runs the state conformance suite against every embedded store and prints the matrix.

use std::sync::Arc;
use std::time::Duration;

use rapr::components::metadata::ComponentMetadata;
use rapr::components::state::conformance::{matrix, run, EtagRules, Outcome};
use rapr::components::state::memory::MemoryStore;
use rapr::components::state::sqlite::{SqliteConfig, SqliteStore};
use rapr::components::state::{Feature, StateStore};

async fn sqlite(dir: &std::path::Path) -> Arc<dyn StateStore> {
    let pairs = vec![("connectionString".to_string(), dir.join("conf.db").display().to_string()), ("cleanupInterval".to_string(), "1s".to_string())];
    let cfg = SqliteConfig::from_metadata(&mut ComponentMetadata::new("conformance", &pairs)).unwrap();
    Arc::new(SqliteStore::open("conformance", cfg).await.unwrap())
}

#[tokio::test]
async fn every_embedded_store_passes_the_state_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<(&str, Arc<dyn StateStore>)> = vec![
        ("state.in-memory", Arc::new(MemoryStore::new())),
        ("state.sqlite", sqlite(dir.path()).await),
        ("state.sqlite(mem)", {
            let pairs = vec![("connectionString".to_string(), ":memory:".to_string())];
            let cfg = SqliteConfig::from_metadata(&mut ComponentMetadata::new("m", &pairs)).unwrap();
            Arc::new(SqliteStore::open("m", cfg).await.unwrap())
        }),
    ];
    let mut reports = Vec::new();
    for (label, store) in stores {
        let report = tokio::time::timeout(Duration::from_secs(60), run(label, Arc::clone(&store), EtagRules::OPAQUE)).await.expect("suite timed out");
        // A store never skips a feature it claims.
        for (feature, claim) in [("etag", Feature::ETag), ("ttl", Feature::Ttl), ("transactions", Feature::Transactional), ("query", Feature::QueryApi)] {
            let outcome = &report.results.iter().find(|(f, _)| *f == feature).unwrap().1;
            if store.features().contains(&claim) {
                assert_ne!(outcome, &Outcome::NotClaimed, "{label} claims {feature} but the suite skipped it");
            }
        }
        reports.push(report);
    }
    println!("state conformance matrix (pass = ran and held, - = not claimed and refused cleanly):\n{}", matrix(&reports));
    let failures: Vec<String> = reports.iter().flat_map(|r| r.failures()).collect();
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
    // The matrix must show real work: both stores ran every core feature.
    assert!(reports.iter().all(|r| r.results.iter().filter(|(_, o)| *o == Outcome::Passed).count() >= 5));
}

/// As contrib's SQLite store (and PostgreSQL's): the migration level lives in the metadata table,
/// so a second `tableName` under an already-migrated metadata table is never created (rapr warns
/// at init), while its own `metadataTableName` gives it its own table.
#[tokio::test]
async fn sqlite_migration_level_belongs_to_the_metadata_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db").display().to_string();
    let open = |table: &str, meta: &str| {
        let pairs = vec![("connectionString".to_string(), db.clone()), ("tableName".to_string(), table.to_string()), ("metadataTableName".to_string(), meta.to_string())];
        let name = table.to_string();
        async move {
            let cfg = SqliteConfig::from_metadata(&mut ComponentMetadata::new(&name, &pairs)).unwrap();
            SqliteStore::open(&name, cfg).await.unwrap()
        }
    };
    let tables = || {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut st = c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
        st.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect::<Vec<_>>()
    };
    open("first", "meta").await.close().await;
    open("second", "meta").await.close().await;
    assert_eq!(tables(), ["first", "meta"], "daprd's layout: the shared level keeps `second` from being created");
    open("third", "meta_third").await.close().await;
    assert!(tables().contains(&"third".to_string()), "{:?}", tables());
}
