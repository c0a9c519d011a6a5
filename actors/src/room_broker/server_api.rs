//! The server API's side of the broker: disconnecting a user's (or one client's)
//! connections, and unsubscribing them from a room. WebSocket sessions are told why
//! ([`SessionNotice`]); SSE streams end. With Redis, the other nodes are told over the bus
//! and do the same with their own connections.

use actix::prelude::*;
use actix_http::ws::CloseCode;

use super::{DisconnectClients, MemberId, RoomBroker, SessionNotice, Unsubscribe};
use crate::client_queue::OutFrame;

/// The close code of a connection the server API disconnected.
pub const DISCONNECTED_CLOSE_CODE: u16 = 4003;

/// Whether a connection of `user` with id `id` is the one a request names.
fn names(id: &str, of: Option<&str>, user: &Option<String>, client: &Option<String>) -> bool {
    client.as_deref() == Some(id) || (user.is_some() && user.as_deref() == of)
}

impl RoomBroker {
    /// The connections (WebSockets and SSE streams) a server-API request names: one
    /// client, or every connection of a user.
    fn matching(&self, user: &Option<String>, client: &Option<String>) -> Vec<MemberId> {
        self.members
            .iter()
            .filter(|(id, entry)| names(id, entry.user.as_deref(), user, client))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Disconnects this node's connections that `user`/`client` names.
    pub(super) fn disconnect_here(
        &mut self,
        user: &Option<String>,
        client: &Option<String>,
    ) -> usize {
        let ids = self.matching(user, client);
        for id in &ids {
            if let Some(entry) = self.members.get(id) {
                let _ = entry.out.try_send(OutFrame::Close(
                    CloseCode::Other(DISCONNECTED_CLOSE_CODE),
                    "disconnected by the server".to_owned(),
                ));
                if let Some(session) = &entry.session {
                    let _ = session.try_send(SessionNotice::Disconnected);
                }
            }
            self.remove_member(id);
        }
        ids.len()
    }

    /// Takes this node's connections that `user`/`client` names out of `room`.
    pub(super) fn unsubscribe_here(
        &mut self,
        room: &str,
        user: &Option<String>,
        client: &Option<String>,
    ) -> usize {
        let mut n = 0;
        for id in self.matching(user, client) {
            let member_of = self
                .members
                .get(&id)
                .is_some_and(|e| e.rooms.iter().any(|r| **r == *room));
            if !member_of {
                continue;
            }
            match self
                .members
                .get(&id)
                .map(|e| (e.session.clone(), e.out.clone()))
            {
                Some((Some(session), _)) => {
                    self.leave_room(room, &id, true);
                    let _ = session.try_send(SessionNotice::Unsubscribed {
                        room: room.to_owned(),
                    });
                }
                // An SSE stream follows one room: it ends.
                Some((None, out)) => {
                    let _ = out.try_send(OutFrame::Close(
                        CloseCode::Other(DISCONNECTED_CLOSE_CODE),
                        "unsubscribed by the server".to_owned(),
                    ));
                    self.remove_member(&id);
                }
                None => continue,
            }
            n += 1;
        }
        n
    }

    /// Tells the other nodes, when there is a bus.
    fn tell_other_nodes(&self, room: Option<String>, user: Option<String>, client: Option<String>) {
        if let Some(bus) = &self.bus {
            let publish = bus.command(room, user, client);
            actix_rt::spawn(async move {
                if let Err(e) = publish.await {
                    log::warn!("bus: a server-API command did not reach the other nodes: {e}");
                }
            });
        }
    }
}

impl Handler<DisconnectClients> for RoomBroker {
    type Result = usize;

    fn handle(&mut self, msg: DisconnectClients, _: &mut Self::Context) -> usize {
        let n = self.disconnect_here(&msg.user, &msg.client);
        self.tell_other_nodes(None, msg.user, msg.client);
        n
    }
}

impl Handler<Unsubscribe> for RoomBroker {
    type Result = usize;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) -> usize {
        let n = self.unsubscribe_here(&msg.room, &msg.user, &msg.client);
        self.tell_other_nodes(Some(msg.room), msg.user, msg.client);
        n
    }
}
