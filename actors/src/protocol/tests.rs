//! The protocol's parsing and limits.

use super::*;

#[test]
fn parses_and_refuses() {
    assert!(matches!(
        parse_client(r#"{"type":"ping"}"#),
        Ok(ClientMsg::Ping)
    ));
    assert!(matches!(
        parse_client(r#"{"type":"join","room":"lobby","since":3}"#),
        Ok(ClientMsg::Join { since: Some(3), .. })
    ));
    let code = |t: &str| parse_client(t).unwrap_err().code;
    assert_eq!(code("{bad"), "invalid_json");
    assert_eq!(code("[1]"), "invalid_message");
    assert_eq!(code(r#"{"room":"x"}"#), "missing_type");
    assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
    assert_eq!(code(r#"{"type":"join"}"#), "invalid_message");
    assert_eq!(code(r#"{"type":"ping","extra":1}"#), "invalid_message");
    assert_eq!(
        code(r#"{"type":"join","room":"no spaces"}"#),
        "invalid_room"
    );
    assert_eq!(code(r#"{"type":"publish","room":"a"}"#), "invalid_message");
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap()
}

#[test]
fn published_data_is_compacted_outside_strings() {
    let data = compact_data(
        raw("{\n  \"a\" : [1, 2],\r\n \"b\": \"x \\\" y\\n\"\n}"),
        64,
    )
    .unwrap();
    assert_eq!(data.get(), r#"{"a":[1,2],"b":"x \" y\n"}"#);
    assert!(!data.get().contains(['\n', '\r']));
    // Already compact: kept as it is.
    assert_eq!(
        compact_data(raw(r#"{"a":"b c"}"#), 64).unwrap().get(),
        r#"{"a":"b c"}"#
    );
}

#[test]
fn published_data_nested_too_deep_is_refused() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(compact_data(raw(&deep(64)), 64).is_ok());
    assert!(compact_data(raw(&deep(65)), 64).is_err());
    // Brackets inside strings do not count.
    let text = format!("\"{}\"", "[".repeat(100));
    assert!(compact_data(raw(&text), 64).is_ok());
}

proptest::proptest! {
    /// Any text a client sends is parsed or refused with an error frame; never a panic.
    #[test]
    fn arbitrary_frames_never_panic(text in ".{0,300}") {
        let _ = parse_client(&text);
    }

    /// Frames that look like the protocol, with arbitrary values, never panic either,
    /// and an accepted publish keeps its data.
    #[test]
    fn protocol_shaped_frames_never_panic(
        kind in proptest::sample::select(vec!["ping", "message", "join", "leave", "publish", "presence", "typing", "x"]),
        room in "[ -~]{0,70}",
        since in proptest::option::of(proptest::prelude::any::<u64>()),
        data in "[ -~]{0,40}",
    ) {
        let frame = serde_json::json!({"type": kind, "room": room, "since": since, "data": data, "id": "c1"});
        let _ = parse_client(&frame.to_string());
    }

    /// Compacting keeps the value exactly (as parsed) and leaves no raw line breaks.
    #[test]
    fn compacting_keeps_the_value(value in arbitrary_json()) {
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let compact = compact_data(RawValue::from_string(pretty).unwrap(), 128).unwrap();
        proptest::prop_assert!(!compact.get().contains(['\n', '\r']));
        let back: serde_json::Value = serde_json::from_str(compact.get()).unwrap();
        proptest::prop_assert_eq!(back, value);
    }
}

fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[ -~\n\t]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[ -~]{0,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn room_names() {
    for ok in [
        "lobby",
        "chat:lobby",
        "a",
        "A-b_c.d:e",
        "user:#alice",
        "dm:#alice,bob",
        &"x".repeat(MAX_ROOM_NAME_LEN),
    ] {
        assert!(validate_room(ok).is_ok(), "{ok:?}");
    }
    for bad in [
        "",
        "no spaces",
        "slash/es",
        "ünïcode",
        "#hash",
        "dm:#",
        "dm:#alice,",
        "dm:#a#b",
        "dm:#al ice",
        &"x".repeat(MAX_ROOM_NAME_LEN + 1),
    ] {
        assert!(validate_room(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn publish_ids_are_bounded() {
    let frame = |id: &str| format!(r#"{{"type":"publish","room":"a","data":1,"id":"{id}"}}"#);
    assert!(parse_client(&frame("c1")).is_ok());
    assert_eq!(
        parse_client(&frame("")).unwrap_err().code,
        "invalid_message"
    );
    let long = "i".repeat(MAX_CLIENT_ID_LEN + 1);
    assert_eq!(
        parse_client(&frame(&long)).unwrap_err().code,
        "invalid_message"
    );
}
