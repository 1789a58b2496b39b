//! The membership core: what changes the tables, what the tables hold, and the report checks.

use proptest::prelude::*;

use super::*;

fn host(name: &str, id: &str, entities: &[&str]) -> Host {
    Host {
        name: name.into(),
        id: id.into(),
        namespace: "default".into(),
        entities: entities.iter().map(|e| e.to_string()).collect(),
        api_level: 20,
        operation: HostOperation::Report as i32,
        ..Default::default()
    }
}

#[test]
fn a_new_stream_changes_the_tables_only_with_actor_types() {
    let mut m = Membership::default();
    assert!(!m.report(1, host("a:1", "app", &[])), "an actor-less sidecar adds nothing");
    assert!(m.is_empty());
    assert!(m.report(2, host("b:1", "app", &["T"])));
    assert!(m.has(2));
}

#[test]
fn the_same_types_in_another_order_are_no_change() {
    let mut m = Membership::default();
    assert!(m.report(1, host("a:1", "app", &["B", "A"])));
    assert!(!m.report(1, host("a:1", "app", &["A", "B"])));
    assert!(m.report(1, host("a:1", "app", &["A"])), "a type dropped");
    assert!(m.report(1, host("a:1", "other", &["A"])), "another app id");
    assert!(m.report(1, host("a:1", "other", &[])), "no types left: the entry goes");
    assert!(!m.has(1));
}

#[test]
fn tables_hold_each_hosts_report_per_type() {
    let mut m = Membership::default();
    m.report(1, host("a:1", "app1", &["T", "U"]));
    m.report(2, host("b:1", "app2", &["U"]));
    let t = m.tables(7, 100);
    assert_eq!(t.version, "7");
    assert_eq!(t.replication_factor, 100);
    assert_eq!(t.api_level, 0);
    assert_eq!(t.entries.len(), 2);
    let u = &t.entries["U"];
    assert_eq!(u.load_map.len(), 2);
    assert_eq!(u.load_map["b:1"].id, "app2");
    assert_eq!(u.load_map["a:1"].entities, ["T", "U"], "the whole report, types sorted");
    assert!(u.hosts.is_empty() && u.sorted_set.is_empty() && u.total_load == 0, "no ring: sidecars build it");
    assert_eq!(t.entries["T"].load_map.keys().collect::<Vec<_>>(), ["a:1"]);
}

#[test]
fn a_reconnected_sidecar_replaces_its_old_stream_in_the_tables() {
    let mut m = Membership::default();
    m.report(1, host("a:1", "old", &["T"]));
    m.report(5, host("a:1", "new", &["T"]));
    assert_eq!(m.tables(1, 100).entries["T"].load_map["a:1"].id, "new");
    assert!(m.remove(5));
    assert_eq!(m.tables(2, 100).entries["T"].load_map["a:1"].id, "old");
    assert!(!m.remove(5), "already gone");
}

#[test]
fn reports_are_checked_as_daprd_checks_them() {
    let ok = host("a:1", "app", &["T", "dapr.internal.default.app.workflow"]);
    assert_eq!(check_host(&ok), Ok(()));
    let mut no_id = ok.clone();
    no_id.id.clear();
    assert_eq!(check_host(&no_id), Err(HostRefused::InvalidArgument("host ID and namespace must be provided".into())));
    let mut no_ns = ok.clone();
    no_ns.namespace.clear();
    assert!(matches!(check_host(&no_ns), Err(HostRefused::InvalidArgument(_))));
    let versioned_unknown = Host { operation: HostOperation::Unknown as i32, version: Some(3), ..ok.clone() };
    assert!(matches!(check_host(&versioned_unknown), Err(HostRefused::InvalidArgument(m)) if m.contains("both operation and version")));
    let ack = Host { operation: HostOperation::Lock as i32, version: Some(3), entities: vec![], name: String::new(), ..ok.clone() };
    assert_eq!(check_host(&ack), Ok(()), "an acknowledgement needs no name or types");
    for stolen in ["dapr.internal.default.other.workflow", "dapr.internal.prod.app.workflow", "dapr.internal.default", "dapr.internal"] {
        let h = host("a:1", "app", &[stolen]);
        assert_eq!(
            check_host(&h),
            Err(HostRefused::PermissionDenied(format!("entity {stolen} is not allowed for app ID app in namespace default"))),
            "{stolen}"
        );
    }
    // Only the `dapr.internal` prefix is reserved.
    assert_eq!(check_host(&host("a:1", "app", &["dapr.actor", "internal.dapr.x"])), Ok(()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the reports, the tables list exactly the stored hosts under each of their types,
    /// and replaying the same reports changes nothing.
    #[test]
    fn tables_match_the_reports_and_replays_change_nothing(
        reports in prop::collection::vec((0u64..6, prop::collection::btree_set("[A-D]", 0..4)), 1..30),
    ) {
        let mut m = Membership::default();
        let mut last: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        for (stream, types) in &reports {
            let types: Vec<String> = types.iter().cloned().collect();
            let refs: Vec<&str> = types.iter().map(String::as_str).collect();
            m.report(*stream, host(&format!("h:{stream}"), "app", &refs));
            last.insert(*stream, types);
        }
        let t = m.tables(1, 100);
        for (stream, types) in &last {
            let name = format!("h:{stream}");
            for ty in types {
                prop_assert!(t.entries[ty].load_map.contains_key(&name));
            }
            prop_assert_eq!(m.has(*stream), !types.is_empty());
        }
        let listed: usize = t.entries.values().map(|e| e.load_map.len()).sum();
        prop_assert_eq!(listed, last.values().map(Vec::len).sum::<usize>());
        for (stream, types) in &last {
            let refs: Vec<&str> = types.iter().map(String::as_str).collect();
            let again = m.report(*stream, host(&format!("h:{stream}"), "app", &refs));
            prop_assert!(!again);
        }
    }
}
