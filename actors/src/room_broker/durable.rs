//! Numbering and history without Redis: the broker numbers each room's events itself and
//! appends them to the relational store ([`crate::db::room_log`]) before anyone receives
//! them, so a restart keeps every room's numbering, epoch and replay window.
//!
//! Appends are group-committed: while one batch is being written, new publishes wait in
//! `pending`; when the write ends they go in the next batch. So a busy room costs one
//! transaction per batch, not per event, and an idle one adds one short transaction to a
//! publish's latency. Only once its batch is stored is an event delivered and acknowledged.
//!
//! When a write fails the batch's publishers are told `unavailable` and nothing of it is
//! delivered; the rooms it touched are reloaded from the store (a write that timed out may
//! still have been committed: what the store holds then is delivered, in order) before
//! they take new publishes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::idempotency::{Idempotency, Seen};
use super::messages::{BrokerError, Publish};
use super::room::StoredEvent;
use super::{send_ack, RoomBroker};
use crate::client_queue::ClientQueue;
use crate::clock::rfc3339_now;
use crate::db::room_log::{NewRoomEvent, RoomAppend, RoomHead};
use crate::db::Database;
use crate::protocol::{new_epoch, RoomEvent, ServerMsg};

/// Most events written in one append.
pub const MAX_APPEND_BATCH: usize = 1024;
/// How long the broker waits at start-up for the rooms' heads before it takes messages.
pub const STORE_START_WAIT: Duration = Duration::from_secs(10);
/// How often the heads are tried while the broker waits.
const HEADS_RETRY: Duration = Duration::from_millis(200);
/// How long to wait before reading a room's head again after the store failed.
pub const RELOAD_RETRY: Duration = Duration::from_secs(1);

/// A publish waiting for its batch to be stored.
pub(super) struct PendingPublish {
    event: RoomEvent,
    stored: StoredEvent,
    epoch: Arc<str>,
    ack: Option<(String, ClientQueue)>,
    key: Option<String>,
    replies: Vec<oneshot::Sender<Result<u64, BrokerError>>>,
}

/// The broker's store when there is no Redis.
pub(super) struct Durable {
    db: Database,
    /// The heads of rooms not in memory: epoch and last sequence number.
    pub(super) heads: HashMap<Arc<str>, (Arc<str>, u64)>,
    /// Whether the heads were read at start (until then publishes are refused).
    pub(super) loaded: bool,
    pending: Vec<PendingPublish>,
    writing: bool,
    /// Rooms being read back after a failed write: their publishes are refused meanwhile.
    reloading: HashSet<Arc<str>>,
    pub(super) idempotency: Idempotency,
}

impl Durable {
    pub(super) fn new(db: Database, idempotency: Idempotency) -> Self {
        Self {
            db,
            heads: HashMap::new(),
            loaded: false,
            pending: Vec::new(),
            writing: false,
            reloading: HashSet::new(),
            idempotency,
        }
    }

    /// The store.
    pub(super) fn db(&self) -> &Database {
        &self.db
    }
}

type Reply = Box<dyn Future<Output = Result<u64, BrokerError>> + Unpin>;

fn answer(rx: oneshot::Receiver<Result<u64, BrokerError>>) -> Reply {
    Box::new(Box::pin(async move {
        rx.await.unwrap_or_else(|_| {
            Err(BrokerError::Unavailable(
                "the room broker stopped before the message was stored".into(),
            ))
        })
    }))
}

/// Tells a WebSocket publisher that its publish was refused.
pub(super) fn refuse(ack: &Option<(String, ClientQueue)>, e: &BrokerError) {
    if let Some((id, out)) = ack {
        let _ = out.text(
            ServerMsg::Error {
                code: e.code(),
                message: &e.to_string(),
                room: None,
                id: Some(id),
            }
            .to_text(),
        );
    }
}

impl RoomBroker {
    /// Reads every room's head from the store. At start-up the broker takes no message
    /// until they are read (for up to [`STORE_START_WAIT`], while the schema is being
    /// prepared), so the first publish and join already see the rooms' numbering; past
    /// that, publishes are refused until a retry succeeds.
    pub(super) fn load_heads(&mut self, ctx: &mut Context<Self>) {
        let Some(d) = &self.durable else { return };
        let db = d.db.clone();
        let load = async move {
            let deadline = Instant::now() + STORE_START_WAIT;
            loop {
                match db.load_room_heads().await {
                    Ok(heads) => return Ok(heads),
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => actix_rt::time::sleep(HEADS_RETRY).await,
                }
            }
        };
        ctx.wait(
            load.into_actor(self)
                .map(|result, this, ctx| this.heads_loaded(result, ctx)),
        );
    }

    fn heads_loaded(
        &mut self,
        result: Result<Vec<RoomHead>, crate::db::DbError>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok(heads) => {
                let d = self.durable.as_mut().expect("durable");
                for h in heads {
                    let seq = u64::try_from(h.last_seq).unwrap_or(0);
                    d.heads.insert(h.room.into(), (h.epoch.into(), seq));
                }
                d.loaded = true;
                log::info!("rooms: {} known from the store", d.heads.len());
            }
            Err(e) => {
                log::warn!("rooms: cannot read the store yet ({e}); retrying");
                ctx.run_later(RELOAD_RETRY, |this, ctx| {
                    let Some(d) = &this.durable else { return };
                    let db = d.db.clone();
                    ctx.spawn(
                        async move { db.load_room_heads().await }
                            .into_actor(this)
                            .map(|result, this, ctx| this.heads_loaded(result, ctx)),
                    );
                });
            }
        }
    }

    /// Publishes without Redis: numbers the event and queues it for the next append.
    pub(super) fn publish_durable(&mut self, msg: Publish, ctx: &mut Context<Self>) -> Reply {
        let (tx, rx) = oneshot::channel();
        let d = self.durable.as_mut().expect("durable");
        let unavailable = if !d.loaded {
            Some("the room store is starting; try again")
        } else if d.reloading.contains(msg.room.as_str()) {
            Some("the room store failed; try again")
        } else {
            None
        };
        if let Some(why) = unavailable {
            let e = BrokerError::Unavailable(why.into());
            refuse(&msg.ack, &e);
            return Box::new(std::future::ready(Err(e)));
        }
        if let Some(key) = &msg.key {
            match d.idempotency.seen(&msg.room, key, Instant::now()) {
                Seen::Done(seq) => {
                    send_ack(&msg.ack, seq);
                    return Box::new(std::future::ready(Ok(seq)));
                }
                Seen::Pending(seq) => {
                    // The first is being stored: answer with it.
                    if let Some(p) = d
                        .pending
                        .iter_mut()
                        .find(|p| p.event.seq == seq && p.event.room == msg.room)
                    {
                        p.replies.push(tx);
                        if let Some((id, out)) = msg.ack {
                            let waiting = out.clone();
                            p.replies.push(ack_on_reply(id, waiting));
                        }
                        return answer(rx);
                    }
                    // In the batch being written: its outcome comes soon; a retry then
                    // gets it.
                    let e = BrokerError::Unavailable(
                        "the first publish with this key is being stored; retry".into(),
                    );
                    refuse(&msg.ack, &e);
                    return Box::new(std::future::ready(Err(e)));
                }
                Seen::New => {}
            }
        }
        let r = match self.room_mut(&msg.room) {
            Ok(r) => r,
            Err(e) => {
                refuse(&msg.ack, &e);
                return Box::new(std::future::ready(Err(e)));
            }
        };
        r.assigned += 1;
        let seq = r.assigned;
        let epoch = r.epoch.get_or_insert_with(new_epoch).clone();
        self.metrics.published.inc();
        let event = RoomEvent {
            room: msg.room,
            seq,
            from: msg.from,
            user: msg.user,
            data: msg.data,
            ts: rfc3339_now(),
        };
        let d = self.durable.as_mut().expect("durable");
        if let Some(key) = &msg.key {
            d.idempotency.pending(&event.room, key, seq, Instant::now());
        }
        d.pending.push(PendingPublish {
            stored: StoredEvent::new(&event),
            event,
            epoch,
            ack: msg.ack,
            key: msg.key,
            replies: vec![tx],
        });
        if !d.writing {
            self.write_batch(ctx);
        }
        answer(rx)
    }

    /// Writes the next batch of pending events.
    fn write_batch(&mut self, ctx: &mut Context<Self>) {
        let d = self.durable.as_mut().expect("durable");
        if d.pending.is_empty() {
            return;
        }
        let n = d.pending.len().min(MAX_APPEND_BATCH);
        let batch: Vec<PendingPublish> = d.pending.drain(..n).collect();
        d.writing = true;
        let created_at = crate::db::models::now();
        let rows: Vec<NewRoomEvent> = batch
            .iter()
            .map(|p| NewRoomEvent {
                room: p.event.room.clone(),
                seq: i64::try_from(p.event.seq).unwrap_or(i64::MAX),
                event: p.stored.json.to_string(),
                created_at,
            })
            .collect();
        let mut heads: Vec<RoomAppend> = Vec::new();
        // Where each room's head is in `heads` (a batch may touch a thousand rooms).
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for p in &batch {
            let keep =
                self.rooms
                    .get(p.event.room.as_str())
                    .map_or(self.config.history_limit, |r| r.history_limit) as u64;
            let head = RoomAppend {
                head: RoomHead::new(&p.event.room, &p.epoch, p.event.seq),
                keep_from: i64::try_from((p.event.seq + 1).saturating_sub(keep)).unwrap_or(0),
            };
            match index.get(p.event.room.as_str()) {
                Some(&i) => heads[i] = head,
                None => {
                    index.insert(p.event.room.as_str(), heads.len());
                    heads.push(head);
                }
            }
        }
        let db = d.db.clone();
        ctx.spawn(
            async move { db.append_room_events(&rows, &heads).await }
                .into_actor(self)
                .map(move |result, this, ctx| {
                    this.durable.as_mut().expect("durable").writing = false;
                    match result {
                        Ok(()) => this.stored(batch),
                        Err(e) => this.append_failed(batch, &e.to_string(), ctx),
                    }
                    this.write_batch(ctx);
                }),
        );
    }

    /// A batch is stored: deliver and acknowledge it, in order.
    fn stored(&mut self, batch: Vec<PendingPublish>) {
        for p in batch {
            let seq = p.event.seq;
            if let Some(r) = self.rooms.get_mut(p.event.room.as_str()) {
                r.epoch = Some(p.epoch.clone());
            }
            self.deliver(&p.event.room, seq, p.stored);
            send_ack(&p.ack, seq);
            for reply in p.replies {
                let _ = reply.send(Ok(seq));
            }
            if let Some(key) = &p.key {
                let d = self.durable.as_mut().expect("durable");
                d.idempotency.done(&p.event.room, key, seq);
            }
        }
    }

    /// A batch was not stored: its publishers (and those queued behind it in the same
    /// rooms, numbered after it) are told, and the rooms are read back from the store.
    fn append_failed(&mut self, batch: Vec<PendingPublish>, why: &str, ctx: &mut Context<Self>) {
        log::warn!("rooms: storing {} events failed: {why}", batch.len());
        let d = self.durable.as_mut().expect("durable");
        let rooms: HashSet<Arc<str>> = batch.iter().map(|p| p.event.room.as_str().into()).collect();
        let (mut failed, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut d.pending)
            .into_iter()
            .partition(|p| rooms.contains(p.event.room.as_str()));
        d.pending = keep;
        failed.splice(0..0, batch);
        let e = BrokerError::Unavailable(format!("the message could not be stored: {why}"));
        for p in failed {
            if let Some(key) = &p.key {
                d.idempotency.forget(&p.event.room, key);
            }
            refuse(&p.ack, &e);
            for reply in p.replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        d.reloading.extend(rooms.iter().cloned());
        for room in rooms {
            self.reload_room(room, ctx);
        }
    }

    /// Reads a room's head back from the store after a failed write, delivering what the
    /// store holds beyond what was delivered (a write that timed out yet committed).
    fn reload_room(&mut self, room: Arc<str>, ctx: &mut Context<Self>) {
        let Some(d) = &self.durable else { return };
        let db = d.db.clone();
        let delivered = self.rooms.get(&*room).map_or(0, |r| r.seq);
        let name = room.clone();
        let fut = async move {
            let head = db.room_head(&name).await?;
            let missed = match &head {
                Some(h) if u64::try_from(h.last_seq).unwrap_or(0) > delivered => {
                    db.room_events_after(&name, delivered, MAX_APPEND_BATCH)
                        .await?
                }
                _ => Vec::new(),
            };
            Ok::<_, crate::db::DbError>((head, missed))
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |result, this, ctx| match result {
                    Ok((head, missed)) => {
                        for (seq, json) in missed {
                            let seq = u64::try_from(seq).unwrap_or(0);
                            this.deliver(&room, seq, StoredEvent::from_json(seq, json.into()));
                        }
                        if let Some(r) = this.rooms.get_mut(&*room) {
                            match head {
                                Some(h) => {
                                    r.epoch = Some(h.epoch.into());
                                    r.seq = u64::try_from(h.last_seq).unwrap_or(0).max(r.seq);
                                }
                                None => r.epoch = None,
                            }
                            r.assigned = r.seq;
                        }
                        let d = this.durable.as_mut().expect("durable");
                        d.reloading.remove(&room);
                    }
                    Err(e) => {
                        log::warn!(
                            "room={room}: cannot read it back from the store ({e}); retrying"
                        );
                        ctx.run_later(RELOAD_RETRY, move |this, ctx| this.reload_room(room, ctx));
                    }
                }),
        );
    }

    /// Forgets what is older than `ROOM_HISTORY_TTL_SECS` in the store.
    pub(super) fn expire_stored_history(&mut self, ctx: &mut Context<Self>) {
        let Some(d) = &self.durable else { return };
        let Ok(ttl) = chrono::Duration::from_std(self.config.history_ttl) else {
            return;
        };
        let db = d.db.clone();
        let before = crate::db::models::now() - ttl;
        ctx.spawn(
            async move { db.expire_room_history(before).await }
                .into_actor(self)
                .map(|result, this, _| match result {
                    Ok(gone) => {
                        // A room still in memory keeps its numbering and epoch: its next
                        // event stores them again.
                        let d = this.durable.as_mut().expect("durable");
                        for room in &gone {
                            d.heads.remove(room.as_str());
                        }
                    }
                    Err(e) => log::warn!("rooms: expiring old history failed: {e}"),
                }),
        );
    }
}

/// A reply that acknowledges on a WebSocket once the first publish with the same key is
/// stored.
fn ack_on_reply(id: String, out: ClientQueue) -> oneshot::Sender<Result<u64, BrokerError>> {
    let (tx, rx) = oneshot::channel::<Result<u64, BrokerError>>();
    actix_rt::spawn(async move {
        match rx.await {
            Ok(Ok(seq)) => send_ack(&Some((id, out)), seq),
            Ok(Err(e)) => refuse(&Some((id, out)), &e),
            Err(_) => {}
        }
    });
    tx
}
