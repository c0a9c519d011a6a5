//! Rooms' numbering and history in the relational store, for a server without Redis: the
//! `rooms` table holds each room's epoch and last sequence number, `room_events` its newest
//! events (the `event` frame's JSON). The broker appends a batch of events here, in one
//! transaction, before any subscriber receives them, so what a client was sent survives a
//! restart and no number is given twice.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel::upsert::excluded;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::models::now;
use super::schema::{room_events, rooms};
use super::{on_conn, Database, DbError};

/// A room's epoch and last sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = rooms)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct RoomHead {
    /// The room.
    pub room: String,
    /// Its epoch: changes when its history is lost.
    pub epoch: String,
    /// The last sequence number given.
    pub last_seq: i64,
    /// When it last changed.
    pub updated_at: NaiveDateTime,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = room_events)]
pub struct NewRoomEvent {
    /// The room.
    pub room: String,
    /// Its sequence number.
    pub seq: i64,
    /// The `event` frame's JSON.
    pub event: String,
    /// When it was published.
    pub created_at: NaiveDateTime,
}

/// What one append does to one room: its new head, and the oldest sequence number kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAppend {
    /// The room's head after the append.
    pub head: RoomHead,
    /// Events before this sequence number are deleted (the room keeps its newest
    /// `history_size`).
    pub keep_from: i64,
}

impl RoomHead {
    /// A head for `room` now.
    pub fn new(room: &str, epoch: &str, last_seq: u64) -> Self {
        Self {
            room: room.to_owned(),
            epoch: epoch.to_owned(),
            last_seq: i64::try_from(last_seq).unwrap_or(i64::MAX),
            updated_at: now(),
        }
    }
}

impl Database {
    /// Every room's head.
    pub async fn load_room_heads(&self) -> Result<Vec<RoomHead>, DbError> {
        on_conn!(self, "load_room_heads", |conn| async {
            rooms::table
                .select(RoomHead::as_select())
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })
    }

    /// One room's head, if the room is known.
    pub async fn room_head(&self, room: &str) -> Result<Option<RoomHead>, DbError> {
        on_conn!(self, "room_head", |conn| async {
            rooms::table
                .find(room)
                .select(RoomHead::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(|e| self.err(e))
        })
    }

    /// Appends `events` and moves each room of `rooms` to its new head, trimming its old
    /// events, in one transaction: all of it is stored, or none.
    pub async fn append_room_events(
        &self,
        events: &[NewRoomEvent],
        rooms_changed: &[RoomAppend],
    ) -> Result<(), DbError> {
        // Postgres: each chunk of events in one `INSERT`, every room's head in one upsert and
        // every trim in one `DELETE`, so a batch over a thousand rooms is a few round trips.
        on_conn!(self, "append_room_events",
            postgres: |conn| async {
                let heads: Vec<RoomHead> = rooms_changed.iter().map(|c| c.head.clone()).collect();
                let trim_rooms: Vec<&str> = rooms_changed.iter().map(|c| c.head.room.as_str()).collect();
                let trim_from: Vec<i64> = rooms_changed.iter().map(|c| c.keep_from).collect();
                conn.transaction::<_, diesel::result::Error, _>(|tx| {
                    async move {
                        for chunk in events.chunks(APPEND_ROWS_PER_STATEMENT) {
                            diesel::insert_into(room_events::table)
                                .values(chunk)
                                .execute(tx)
                                .await?;
                        }
                        for chunk in heads.chunks(APPEND_ROWS_PER_STATEMENT) {
                            diesel::insert_into(rooms::table)
                                .values(chunk)
                                .on_conflict(rooms::room)
                                .do_update()
                                .set((
                                    rooms::epoch.eq(excluded(rooms::epoch)),
                                    rooms::last_seq.eq(excluded(rooms::last_seq)),
                                    rooms::updated_at.eq(excluded(rooms::updated_at)),
                                ))
                                .execute(tx)
                                .await?;
                        }
                        diesel::sql_query(
                            "DELETE FROM room_events e USING unnest($1::text[], $2::bigint[]) \
                             AS k(room, keep_from) WHERE e.room = k.room AND e.seq < k.keep_from",
                        )
                        .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&trim_rooms)
                        .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(&trim_from)
                        .execute(tx)
                        .await?;
                        Ok(())
                    }
                    .scope_boxed()
                })
                .await
                .map_err(|e| self.err(e))
            },
            // MySQL: events in multi-row `INSERT`s, heads in one `INSERT … ON DUPLICATE KEY
            // UPDATE` per chunk and every trim of a chunk in one `DELETE`.
            mysql: |conn| async {
                conn.transaction::<_, diesel::result::Error, _>(|tx| {
                    async move {
                        for chunk in events.chunks(APPEND_ROWS_PER_STATEMENT) {
                            diesel::insert_into(room_events::table)
                                .values(chunk)
                                .execute(tx)
                                .await?;
                        }
                        let heads: Vec<RoomHead> =
                            rooms_changed.iter().map(|c| c.head.clone()).collect();
                        for chunk in heads.chunks(APPEND_ROWS_PER_STATEMENT) {
                            diesel::insert_into(rooms::table)
                                .values(chunk)
                                .on_conflict(diesel::dsl::DuplicatedKeys)
                                .do_update()
                                .set((
                                    rooms::epoch.eq(diesel::dsl::sql::<Text>("VALUES(epoch)")),
                                    rooms::last_seq.eq(diesel::dsl::sql::<BigInt>("VALUES(last_seq)")),
                                    rooms::updated_at
                                        .eq(diesel::dsl::sql::<Timestamp>("VALUES(updated_at)")),
                                ))
                                .execute(tx)
                                .await?;
                        }
                        for chunk in rooms_changed.chunks(APPEND_ROWS_PER_STATEMENT) {
                            let mut text = String::from("DELETE FROM room_events WHERE ");
                            for i in 0..chunk.len() {
                                if i > 0 {
                                    text.push_str(" OR ");
                                }
                                text.push_str("(room = ? AND seq < ?)");
                            }
                            let mut query = diesel::sql_query(text).into_boxed::<diesel::mysql::Mysql>();
                            for change in chunk {
                                query = query
                                    .bind::<Text, _>(change.head.room.clone())
                                    .bind::<BigInt, _>(change.keep_from);
                            }
                            query.execute(tx).await?;
                        }
                        Ok(())
                    }
                    .scope_boxed()
                })
                .await
                .map_err(|e| self.err(e))
            },
            // SQLite runs the whole transaction in one blocking call: a statement at a time
            // through the async wrapper cost a thread hand-off per row, and a batch touching
            // many rooms (an insert, an upsert and a trim per room) took a second.
            sqlite: |conn| {
                let events = events.to_vec();
                let changes = rooms_changed.to_vec();
                async move {
                    conn.spawn_blocking(move |c| {
                        c.transaction(|tx| {
                            for event in &events {
                                diesel::RunQueryDsl::execute(
                                    diesel::insert_into(room_events::table).values(event),
                                    tx,
                                )?;
                            }
                            for change in &changes {
                                diesel::RunQueryDsl::execute(
                                    diesel::insert_into(rooms::table)
                                        .values(&change.head)
                                        .on_conflict(rooms::room)
                                        .do_update()
                                        .set((
                                            rooms::epoch.eq(excluded(rooms::epoch)),
                                            rooms::last_seq.eq(excluded(rooms::last_seq)),
                                            rooms::updated_at.eq(excluded(rooms::updated_at)),
                                        )),
                                    tx,
                                )?;
                                diesel::RunQueryDsl::execute(
                                    diesel::delete(
                                        room_events::table
                                            .filter(room_events::room.eq(&change.head.room))
                                            .filter(room_events::seq.lt(change.keep_from)),
                                    ),
                                    tx,
                                )?;
                            }
                            Ok(())
                        })
                    })
                    .await
                    .map_err(|e| self.err(e))
                }
            }
        )
    }

    /// Up to `limit` events of `room` after `since`, oldest first: `(seq, event JSON)`.
    pub async fn room_events_after(
        &self,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, DbError> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_conn!(self, "room_events_after", |conn| async {
            room_events::table
                .filter(room_events::room.eq(room))
                .filter(room_events::seq.gt(since))
                .order(room_events::seq.asc())
                .limit(limit)
                .select((room_events::seq, room_events::event))
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })
    }

    /// Forgets what is older than `before`: events published before it, and rooms with no
    /// event since (their numbering starts again, in a new epoch). Returns the rooms
    /// forgotten.
    pub async fn expire_room_history(&self, before: NaiveDateTime) -> Result<Vec<String>, DbError> {
        on_conn!(self, "expire_room_history", |conn| async {
            conn.transaction::<_, diesel::result::Error, _>(|tx| {
                async move {
                    diesel::delete(room_events::table.filter(room_events::created_at.lt(before)))
                        .execute(tx)
                        .await?;
                    let gone: Vec<String> = rooms::table
                        .filter(rooms::updated_at.lt(before))
                        .select(rooms::room)
                        .load(tx)
                        .await?;
                    diesel::delete(rooms::table.filter(rooms::updated_at.lt(before)))
                        .execute(tx)
                        .await?;
                    Ok(gone)
                }
                .scope_boxed()
            })
            .await
            .map_err(|e| self.err(e))
        })
    }
}

/// Rows per `INSERT` of an append on Postgres (4 bound values each, far below its limit).
const APPEND_ROWS_PER_STATEMENT: usize = 1000;
