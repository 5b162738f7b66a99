//! In-database tests (`cargo pgrx test`): each runs inside one transaction that is rolled back.
use pgrx::prelude::*;

#[pg_test]
fn parse_uuid_accepts_common_forms_and_rejects_garbage() {
    use crate::context::parse_uuid;
    let a = parse_uuid("00000000-0000-0000-0000-000000000001").unwrap();
    assert_eq!(a.to_string(), "00000000-0000-0000-0000-000000000001");
    assert_eq!(parse_uuid("{00000000000000000000000000000001}"), Some(a));
    assert_eq!(parse_uuid(""), None);
    assert_eq!(parse_uuid("not-a-uuid"), None);
    assert_eq!(parse_uuid("00000000-0000-0000-0000-00000000000g"), None);
}
