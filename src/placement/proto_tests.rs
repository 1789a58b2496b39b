//! The placement messages' bytes on the wire: field numbers and presence as daprd's (the bytes
//! are written out by hand from the field numbers in docs/notes/placement-daprd.md).

use prost::Message;
use rapr_proto::placement::v1::{Host, HostOperation, PlacementOrder, PlacementTable, PlacementTables};

#[test]
fn an_acknowledgement_carries_version_zero_as_present() {
    // daprd's acks set `version` (field 10, proto3 optional): 0 must still be on the wire.
    let ack = Host { id: "a".into(), namespace: "n".into(), operation: HostOperation::Lock as i32, version: Some(0), ..Default::default() };
    let bytes = ack.encode_to_vec();
    // id (5, len) "a"; namespace (8, len) "n"; operation (9, varint) 2; version (10, varint) 0.
    assert_eq!(bytes, [0x2a, 1, b'a', 0x42, 1, b'n', 0x48, 2, 0x50, 0]);
    assert_eq!(Host::decode(bytes.as_slice()).unwrap(), ack);
    // A report has none.
    let report = Host { name: "h:1".into(), operation: HostOperation::Report as i32, ..Default::default() };
    assert_eq!(report.encode_to_vec(), [0x0a, 3, b'h', b':', b'1', 0x48, 1]);
}

#[test]
fn an_update_order_nests_tables_entries_and_load_map() {
    let host = Host { name: "h:1".into(), entities: vec!["T".into()], api_level: 20, ..Default::default() };
    let mut table = PlacementTable::default();
    table.load_map.insert("h:1".into(), host);
    let mut tables = PlacementTables { version: "7".into(), replication_factor: 100, ..Default::default() };
    tables.entries.insert("T".into(), table);
    let order = PlacementOrder { tables: Some(tables), operation: "update".into(), version: 7 };
    let bytes = order.encode_to_vec();
    // operation is field 2 (len), version field 3 (varint) after the tables (field 1).
    assert!(bytes.ends_with(&[0x12, 6, b'u', b'p', b'd', b'a', b't', b'e', 0x18, 7]), "{bytes:?}");
    assert_eq!(bytes[0], 0x0a, "tables is field 1");
    // replication_factor is field 4 of the tables (varint 100 = 0x64).
    assert!(bytes.windows(2).any(|w| w == [0x20, 0x64]));
    assert_eq!(PlacementOrder::decode(bytes.as_slice()).unwrap(), order);
}
