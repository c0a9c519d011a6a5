//! The textbook actix design, as in actix's `websockets/chat` example: one `ChatServer`
//! actor holds the rooms; each socket is an actix-web-actors session; a publish is
//! serialised once and `do_send` to every member, whose context buffers the write.
//! Unbounded: nothing drops a client that stops reading. Usage: actix-textbook PORT.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::value::RawValue;

const HEARTBEAT: Duration = Duration::from_secs(5);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Message)]
#[rtype(result = "()")]
struct Text(ByteString);

#[derive(Message)]
#[rtype(result = "()")]
struct Join {
    id: usize,
    room: String,
    addr: Recipient<Text>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Publish {
    room: String,
    from: String,
    data: Box<RawValue>,
    id: Option<String>,
    publisher: Recipient<Text>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Disconnect {
    id: usize,
}

#[derive(Default)]
struct ChatServer {
    rooms: HashMap<String, (u64, HashMap<usize, Recipient<Text>>)>,
}

impl Actor for ChatServer {
    type Context = Context<Self>;
}

impl Handler<Join> for ChatServer {
    type Result = ();
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let room = self.rooms.entry(msg.room.clone()).or_default();
        let joined = format!(r#"{{"type":"joined","room":{},"seq":{}}}"#, serde_json::to_string(&msg.room).unwrap(), room.0);
        msg.addr.do_send(Text(joined.into()));
        room.1.insert(msg.id, msg.addr);
    }
}

impl Handler<Publish> for ChatServer {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        let room = self.rooms.entry(msg.room.clone()).or_default();
        room.0 += 1;
        let seq = room.0;
        let event: ByteString = format!(
            r#"{{"type":"event","room":{},"seq":{seq},"from":{},"data":{},"ts":"2026-01-01T00:00:00.000Z"}}"#,
            serde_json::to_string(&msg.room).unwrap(),
            serde_json::to_string(&msg.from).unwrap(),
            msg.data.get()
        )
        .into();
        if let Some(id) = msg.id {
            let ack = format!(r#"{{"type":"ack","id":{},"seq":{seq}}}"#, serde_json::to_string(&id).unwrap());
            msg.publisher.do_send(Text(ack.into()));
        }
        for addr in room.1.values() {
            addr.do_send(Text(event.clone()));
        }
    }
}

impl Handler<Disconnect> for ChatServer {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        for room in self.rooms.values_mut() {
            room.1.remove(&msg.id);
        }
    }
}

#[derive(Deserialize)]
struct ClientMsg {
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    data: Option<Box<RawValue>>,
    id: Option<String>,
}

struct Session {
    id: usize,
    name: String,
    hb: Instant,
    server: Addr<ChatServer>,
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(HEARTBEAT, |act, ctx| {
            if Instant::now().duration_since(act.hb) > CLIENT_TIMEOUT {
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.server.do_send(Disconnect { id: self.id });
        Running::Stop
    }
}

impl Handler<Text> for Session {
    type Result = ();
    fn handle(&mut self, msg: Text, ctx: &mut Self::Context) {
        ctx.text(msg.0);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let Ok(msg) = msg else {
            ctx.stop();
            return;
        };
        match msg {
            ws::Message::Ping(p) => {
                self.hb = Instant::now();
                ctx.pong(&p);
            }
            ws::Message::Pong(_) => self.hb = Instant::now(),
            ws::Message::Text(text) => {
                self.hb = Instant::now();
                let Ok(m) = serde_json::from_str::<ClientMsg>(&text) else {
                    return;
                };
                let room = m.room.unwrap_or_default();
                match m.kind.as_str() {
                    "join" => self.server.do_send(Join {
                        id: self.id,
                        room,
                        addr: ctx.address().recipient(),
                    }),
                    "publish" => self.server.do_send(Publish {
                        room,
                        from: self.name.clone(),
                        data: m.data.unwrap_or_else(|| RawValue::from_string("null".into()).unwrap()),
                        id: m.id,
                        publisher: ctx.address().recipient(),
                    }),
                    "ping" => ctx.text(r#"{"type":"pong"}"#),
                    _ => {}
                }
            }
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            _ => {}
        }
    }
}

#[derive(Deserialize)]
struct Query {
    name: Option<String>,
}

async fn ws_json(
    req: HttpRequest,
    stream: web::Payload,
    q: web::Query<Query>,
    server: web::Data<Addr<ChatServer>>,
    ids: web::Data<std::sync::atomic::AtomicUsize>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ws::start(
        Session {
            id,
            name: q.name.clone().unwrap_or_else(|| format!("guest-{id}")),
            hb: Instant::now(),
            server: server.get_ref().clone(),
        },
        &req,
        stream,
    )
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8002);
    let server = web::Data::new(ChatServer::default().start());
    let ids = web::Data::new(std::sync::atomic::AtomicUsize::new(1));
    HttpServer::new(move || {
        App::new()
            .app_data(server.clone())
            .app_data(ids.clone())
            .route("/ws/json", web::get().to(ws_json))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
    })
    .workers(2)
    .backlog(4096)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
