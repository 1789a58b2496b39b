//! `pubsub.sqlite` against a real file: the broker conformance suite, and two broker instances on
//! one file (as two processes would share it).

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::components::metadata::ComponentMetadata;
use crate::components::pubsub::conformance::{self, Capabilities, Probe, Target};
use crate::components::pubsub::{Message, Metadata, Outcome};

fn config(path: &std::path::Path, extra: &[(&str, &str)]) -> BrokerConfig {
    let mut pairs = vec![
        ("connectionString".to_string(), path.display().to_string()),
        ("processingTimeout".to_string(), "1s".to_string()),
        ("redeliverInterval".to_string(), "200ms".to_string()),
        ("pollInterval".to_string(), "50ms".to_string()),
        ("cleanupInterval".to_string(), "1s".to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    BrokerConfig::from_metadata(&mut ComponentMetadata::new("ps", &pairs)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_broker_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(SqliteBroker::open("ps", config(&dir.path().join("ps.db"), &[])).await.unwrap());
    let probe_broker = Arc::clone(&broker);
    let probe: Probe = Arc::new(move |topic, group, id| {
        let b = Arc::clone(&probe_broker);
        Box::pin(async move { b.held(&topic, &group, &id).await.map_err(|e| e.to_string()) })
    });
    let report = conformance::run(Target {
        label: "pubsub.sqlite".into(),
        broker,
        caps: Capabilities::DURABLE,
        still_stored: Some(probe),
        // A cleared claim or a retry comes back within the processing timeout.
        redelivery_within: Duration::from_millis(1300),
        subscribe_metadata: Metadata::new(),
    })
    .await;
    println!("{}", conformance::matrix(std::slice::from_ref(&report)));
    assert!(report.failures().is_empty(), "{:#?}", report.failures());
}

struct Forward(tokio::sync::mpsc::UnboundedSender<Message>);

#[async_trait]
impl MessageHandler for Forward {
    async fn handle(&self, msg: Message) -> Outcome {
        let _ = self.0.send(msg);
        Outcome::Ack
    }
}

fn sub(topic: &str, group: &str) -> SubscribeRequest {
    SubscribeRequest { topic: topic.into(), metadata: Metadata::from([("consumerID".to_string(), group.to_string())]) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_file_share_a_group_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let (a, b) = (SqliteBroker::open("a", config(&path, &[])).await.unwrap(), SqliteBroker::open("b", config(&path, &[])).await.unwrap());
    // Published before anyone subscribed: kept for the first group, as on a Redis stream.
    a.publish(PublishRequest { topic: "t".into(), data: Bytes::from_static(b"early"), ..Default::default() }).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    b.subscribe(sub("t", "app"), Arc::new(Forward(tx.clone())), cancel.clone()).await.unwrap();
    a.subscribe(sub("t", "app"), Arc::new(Forward(tx)), cancel.clone()).await.unwrap();
    for i in 0..10 {
        a.publish(PublishRequest { topic: "t".into(), data: Bytes::from(format!("m{i}")), ..Default::default() }).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 11 {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("all 11 messages within 10s").unwrap();
        got.push(String::from_utf8_lossy(&m.data).into_owned());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rx.try_recv().is_err(), "a message acknowledged once was delivered again");
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 11);
    cancel.cancel();
    a.close().await;
    b.close().await;
    // A new instance on the file: nothing left for `app`; a new group still sees what the sweep
    // has not removed (every message acknowledged by every group is gone).
    let c = SqliteBroker::open("c", config(&path, &[])).await.unwrap();
    let t = c.tables.clone();
    let left: i64 = c.pool.write(move |conn| {
        store::sweep(conn, &t, None)?;
        conn.query_row(&format!("SELECT COUNT(*) FROM {}", t.messages()), [], |r| r.get(0)).map_err(db_err)
    }).await.unwrap();
    assert_eq!(left, 0, "acknowledged messages were not swept");
    c.close().await;
}
