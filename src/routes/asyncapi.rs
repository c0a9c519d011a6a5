//! `GET /asyncapi.json`: an AsyncAPI 3 document of the realtime protocol — every frame of
//! `/ws/json` in both directions, the plain-text WebSockets and the SSE streams. The frame
//! schemas come from the Rust types that parse and serialise the frames
//! ([`courier_actors::protocol`], [`courier_actors::sse_feed::Update`]), so the document
//! follows the code.

use actix_web::HttpRequest;
use courier_actors::protocol::{client_frames, EventFrame, MemberView, ServerMsg};
use courier_actors::sse_feed::Update;
use serde_json::{json, Map, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// A schema as JSON. utoipa's references point to `#/components/schemas/<name>`, where
/// the AsyncAPI document keeps them too.
fn schema_json(schema: RefOr<Schema>) -> Value {
    serde_json::to_value(schema).expect("schemas serialise")
}

fn type_const(schema: &mut Value, kind: &str) {
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "type".into(),
            json!({"type": "string", "const": kind, "description": format!("Always `{kind}`.")}),
        );
    }
}

/// The `type` a server-frame variant's schema requires (its single enum value).
fn variant_type(schema: &Value) -> Option<String> {
    let kind = schema.pointer("/properties/type")?;
    kind.get("enum")
        .and_then(|e| e.get(0))
        .or_else(|| kind.get("const"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn message(name: &str, title: &str, description: &str, schema_key: &str) -> Value {
    json!({
        "name": name,
        "title": title,
        "summary": description,
        "contentType": "application/json",
        "payload": {"$ref": format!("#/components/schemas/{schema_key}")},
    })
}

fn text_message(name: &str, summary: &str, example: &str) -> Value {
    json!({
        "name": name,
        "summary": summary,
        "contentType": "text/plain",
        "payload": {"type": "string", "examples": [example]},
    })
}

/// Builds the document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    let mut messages = Map::new();
    let mut json_channel = Map::new();
    let mut client_refs = Vec::new();
    let mut server_refs = Vec::new();

    // What clients send on /ws/json.
    for (kind, summary, schema) in client_frames() {
        let key = format!("client_{kind}");
        let mut schema = schema_json(schema);
        type_const(&mut schema, kind);
        schemas.insert(key.clone(), schema);
        messages.insert(
            key.clone(),
            message(kind, &format!("client: {kind}"), summary, &key),
        );
        json_channel.insert(
            key.clone(),
            json!({"$ref": format!("#/components/messages/{key}")}),
        );
        client_refs.push(json!({"$ref": format!("#/channels/json/messages/{key}")}));
    }

    // What the server sends: every variant of ServerMsg, and room events.
    let mut referenced = Vec::new();
    ServerMsg::schemas(&mut referenced);
    EventFrame::schemas(&mut referenced);
    for (name, schema) in referenced {
        schemas.insert(name, schema_json(schema));
    }
    schemas.insert("MemberView".into(), schema_json(MemberView::schema()));
    let server = schema_json(ServerMsg::schema());
    let variants = server
        .get("oneOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut event = schema_json(EventFrame::schema());
    type_const(&mut event, "event");
    let described = variants
        .into_iter()
        .filter_map(|v| variant_type(&v).map(|kind| (kind, v)))
        .chain(std::iter::once(("event".to_owned(), event)));
    for (kind, schema) in described {
        let key = format!("server_{kind}");
        let summary = schema
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        schemas.insert(key.clone(), schema);
        messages.insert(
            key.clone(),
            message(&kind, &format!("server: {kind}"), &summary, &key),
        );
        json_channel.insert(
            key.clone(),
            json!({"$ref": format!("#/components/messages/{key}")}),
        );
        server_refs.push(json!({"$ref": format!("#/channels/json/messages/{key}")}));
    }

    // SSE: a room's stream, and the updates feed.
    schemas.insert("Update".into(), schema_json(Update::schema()));
    messages.insert(
        "sse_room_joined".into(),
        message(
            "joined",
            "SSE event: joined",
            "`event: joined`, first on the stream: the room's `seq` and `epoch`, and with \
             `since`/`Last-Event-ID` whether every missed event follows (`recovered`).",
            "server_joined",
        ),
    );
    messages.insert(
        "sse_room_message".into(),
        message(
            "message",
            "SSE event: message",
            "`id: <epoch>:<seq>`, `event: message`, `data:` a room event. Reconnecting with \
             `Last-Event-ID` (EventSource does) replays what was missed.",
            "server_event",
        ),
    );
    messages.insert(
        "sse_error".into(),
        message(
            "error",
            "SSE event: error",
            "`event: error` before the stream ends: `token_expired` (reconnect with a new \
             token and `Last-Event-ID`), or why the stream was refused.",
            "server_error",
        ),
    );
    messages.insert(
        "sse_update".into(),
        message(
            "update",
            "SSE event: update",
            "`event: update`: members joining and leaving rooms, room activity, job events.",
            "Update",
        ),
    );
    messages.insert(
        "sse_heartbeat".into(),
        text_message(
            "heartbeat",
            "`event: heartbeat` with the time (RFC 3339, UTC)",
            "2026-12-01T12:00:00.000Z",
        ),
    );
    messages.insert(
        "sse_demo".into(),
        text_message(
            "message",
            "`event: message`: `Message 0` … `Message 9`",
            "Message 0",
        ),
    );

    // The plain-text WebSockets.
    messages.insert(
        "text_in".into(),
        text_message("text", "a line of text", "hello"),
    );
    messages.insert(
        "echo_out".into(),
        text_message("echo", "`Echo: <text>`", "Echo: hello"),
    );
    messages.insert(
        "authenticated_out".into(),
        text_message(
            "line",
            "`Welcome <name>` first, then `<name>: <text>`",
            "alice: hello",
        ),
    );
    messages.insert(
        "chat_out".into(),
        text_message(
            "line",
            "`Client <name> joined the chat`, `Client <name>: <text>`, `Client <name> left the chat`",
            "Client guest-7: hello",
        ),
    );

    let channel_ref = |key: &str| json!({"$ref": format!("#/components/messages/{key}")});
    let room_param = json!({"description": "The room: 1-64 characters of letters, digits, `-`, `_`, `.`, `:` (a personal room adds `#` and its users)."});
    let channels = json!({
        "json": {
            "address": "/ws/json",
            "title": "JSON room protocol (WebSocket)",
            "description": "Connect with `?token=<JWT>` or `?name=<guest name>`. The server's first frame is `hello`. Every frame is a JSON object with a `type`. Close codes: 1007 invalid UTF-8, 1009 too big, 1008 bad token / flood / too slow, 1001 idle or shutdown, 4001 token expired and not refreshed, 4003 disconnected by the server API.",
            "messages": Value::Object(json_channel),
        },
        "echo": {
            "address": "/ws",
            "title": "Echo (WebSocket, text)",
            "messages": {"text_in": channel_ref("text_in"), "echo_out": channel_ref("echo_out")},
        },
        "authenticated": {
            "address": "/ws/authenticated",
            "title": "Authenticated echo (WebSocket, text)",
            "description": "`?token=<JWT>`; a missing or bad token is closed with 1008 and a reason.",
            "messages": {"text_in": channel_ref("text_in"), "authenticated_out": channel_ref("authenticated_out")},
        },
        "chat": {
            "address": "/ws/chat/{client_id}",
            "title": "Shared chat room `chat` (WebSocket, text)",
            "parameters": {"client_id": {"description": "The client's id; a guest is shown as `guest-<client_id>`."}},
            "messages": {"text_in": channel_ref("text_in"), "chat_out": channel_ref("chat_out")},
        },
        "room_events": {
            "address": "/rooms/{room}/events",
            "title": "A room as Server-Sent Events",
            "description": "`?since=&epoch=` or `Last-Event-ID` to resume; `?token=` (or `Authorization`) where the room's namespace needs one.",
            "parameters": {"room": room_param},
            "messages": {
                "sse_room_joined": channel_ref("sse_room_joined"),
                "sse_room_message": channel_ref("sse_room_message"),
                "sse_error": channel_ref("sse_error"),
            },
        },
        "updates": {
            "address": "/sse/updates",
            "title": "Live updates (Server-Sent Events)",
            "messages": {"sse_update": channel_ref("sse_update")},
        },
        "heartbeat": {
            "address": "/sse/heartbeat",
            "title": "Heartbeat (Server-Sent Events)",
            "messages": {"sse_heartbeat": channel_ref("sse_heartbeat")},
        },
        "sse_demo": {
            "address": "/sse",
            "title": "Ten demo events (Server-Sent Events)",
            "messages": {"sse_demo": channel_ref("sse_demo")},
        },
    });
    let op = |action: &str, channel: &str, summary: &str, messages: Value| {
        json!({
            "action": action,
            "channel": {"$ref": format!("#/channels/{channel}")},
            "summary": summary,
            "messages": messages,
        })
    };
    let msg_refs = |channel: &str, keys: &[&str]| {
        Value::Array(
            keys.iter()
                .map(|k| json!({"$ref": format!("#/channels/{channel}/messages/{k}")}))
                .collect(),
        )
    };
    let operations = json!({
        "json_send": op("send", "json", "Frames a client sends on /ws/json", Value::Array(client_refs)),
        "json_receive": op("receive", "json", "Frames the server sends on /ws/json", Value::Array(server_refs)),
        "echo_send": op("send", "echo", "Text to echo", msg_refs("echo", &["text_in"])),
        "echo_receive": op("receive", "echo", "The echo", msg_refs("echo", &["echo_out"])),
        "authenticated_send": op("send", "authenticated", "Text to echo", msg_refs("authenticated", &["text_in"])),
        "authenticated_receive": op("receive", "authenticated", "The echo, named", msg_refs("authenticated", &["authenticated_out"])),
        "chat_send": op("send", "chat", "A chat line", msg_refs("chat", &["text_in"])),
        "chat_receive": op("receive", "chat", "Chat lines and announcements", msg_refs("chat", &["chat_out"])),
        "room_events_receive": op("receive", "room_events", "A room's events", msg_refs("room_events", &["sse_room_joined", "sse_room_message", "sse_error"])),
        "updates_receive": op("receive", "updates", "Live updates", msg_refs("updates", &["sse_update"])),
        "heartbeat_receive": op("receive", "heartbeat", "Heartbeats", msg_refs("heartbeat", &["sse_heartbeat"])),
        "sse_demo_receive": op("receive", "sse_demo", "Demo events", msg_refs("sse_demo", &["sse_demo"])),
    });
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "courier realtime protocol",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "WebSockets and Server-Sent Events of courier. REST is described in /openapi.json; a JavaScript client is served at /client.js.",
            "license": {"name": "MIT OR Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": Value::Object(schemas), "messages": Value::Object(messages)},
    })
}

/// `GET /asyncapi.json`.
pub async fn asyncapi_json(req: HttpRequest) -> actix_web::HttpResponse {
    static DOC: std::sync::OnceLock<super::assets::Asset> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let text = serde_json::to_string_pretty(&document()).expect("the document serialises");
        super::assets::Asset::new(text.into_bytes(), "application/json")
    })
    .respond(&req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_actors::protocol::parse_client;

    /// One of every server frame. Adding a variant to `ServerMsg` breaks the match in
    /// `index`, and then this list, until the new frame is here too.
    fn every_server_frame() -> Vec<ServerMsg<'static>> {
        const MEMBER: &MemberView = &MemberView {
            id: String::new(),
            name: String::new(),
            user: None,
        };
        vec![
            ServerMsg::Hello {
                client_id: "c",
                user: None,
                name: "n",
                expires_at: None,
            },
            ServerMsg::Refreshed { expires_at: 1 },
            ServerMsg::Pong,
            ServerMsg::Response {
                data: String::new(),
            },
            ServerMsg::Joined {
                room: "r",
                seq: 1,
                epoch: None,
                recovered: None,
            },
            ServerMsg::Resync {
                room: "r",
                seq: 1,
                epoch: None,
                recovered: false,
            },
            ServerMsg::Left { room: "r" },
            ServerMsg::Ack { id: "i", seq: 1 },
            ServerMsg::Presence {
                room: "r",
                members: &[],
            },
            ServerMsg::MemberJoined {
                room: "r",
                member: MEMBER,
            },
            ServerMsg::MemberLeft {
                room: "r",
                member: MEMBER,
            },
            ServerMsg::Typing {
                room: "r",
                from: "f",
            },
            ServerMsg::error("c", "m"),
        ]
    }

    fn index(msg: &ServerMsg<'_>) -> usize {
        match msg {
            ServerMsg::Hello { .. } => 0,
            ServerMsg::Refreshed { .. } => 1,
            ServerMsg::Pong => 2,
            ServerMsg::Response { .. } => 3,
            ServerMsg::Joined { .. } => 4,
            ServerMsg::Resync { .. } => 5,
            ServerMsg::Left { .. } => 6,
            ServerMsg::Ack { .. } => 7,
            ServerMsg::Presence { .. } => 8,
            ServerMsg::MemberJoined { .. } => 9,
            ServerMsg::MemberLeft { .. } => 10,
            ServerMsg::Typing { .. } => 11,
            ServerMsg::Error { .. } => 12,
        }
    }

    fn documented(doc: &Value, prefix: &str) -> Vec<String> {
        doc["channels"]["json"]["messages"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned))
            .collect()
    }

    #[test]
    fn every_server_frame_is_a_documented_message() {
        let frames = every_server_frame();
        let mut indices: Vec<usize> = frames.iter().map(index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices, (0..=12).collect::<Vec<_>>(), "one of each variant");
        let doc = document();
        let server = documented(&doc, "server_");
        for frame in &frames {
            let value: Value = serde_json::from_str(&frame.to_text()).unwrap();
            let kind = value["type"].as_str().unwrap();
            assert!(server.iter().any(|k| k == kind), "{kind} is not documented");
        }
        assert!(server.iter().any(|k| k == "event"));
        assert_eq!(server.len(), frames.len() + 1, "{server:?}");
    }

    #[test]
    fn every_client_frame_the_parser_reads_is_documented() {
        let doc = document();
        let client = documented(&doc, "client_");
        // The parser's list of types, from its own refusal of an unknown one.
        let refusal = parse_client(r#"{"type":"?"}"#).unwrap_err().message;
        let listed: Vec<&str> = refusal
            .split("expected ")
            .nth(1)
            .unwrap()
            .split([',', ' '])
            .filter(|w| !w.is_empty() && *w != "or")
            .collect();
        let mut a = client.clone();
        a.sort();
        let mut b: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
        b.sort();
        assert_eq!(a, b);
        for kind in &client {
            let err = parse_client(&format!(r#"{{"type":"{kind}"}}"#)).err();
            assert!(
                err.as_ref().is_none_or(|e| e.code != "unknown_type"),
                "{kind}: {err:?}"
            );
        }
    }
}
