//! The server API for backends: disconnect a user's connections (or one connection) and
//! take them out of a room. These always need the API key (or a token with the `admin`
//! role), whatever `REQUIRE_AUTH` says. Publishing into any room, `nobody` namespaces
//! included, is `POST /rooms/{room}/messages` with the API key.

use actix_web::{web, HttpRequest};
use courier_actors::protocol::validate_room;
use courier_actors::room_broker::{DisconnectClients, Unsubscribe};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{AppError, ErrorBody};
use crate::routes::access::{grant, meets, Need};
use crate::state::AppState;

/// Which connections: every connection of `user`, or the one with `client_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// A user (a token's `sub`).
    user: Option<String>,
    /// A connection (the `client_id` of its `hello`).
    client_id: Option<String>,
}

/// Which connections to take out of which room.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomClients {
    /// The room.
    room: String,
    /// A user.
    user: Option<String>,
    /// A connection.
    client_id: Option<String>,
}

/// How many connections were affected.
#[derive(Debug, Serialize, ToSchema)]
pub struct Affected {
    /// Connections affected on the node that answered (other nodes are told over Redis).
    connections: usize,
}

fn chosen(user: &Option<String>, client_id: &Option<String>) -> Result<(), AppError> {
    if user.is_none() && client_id.is_none() {
        return Err(AppError::Unprocessable("name a user or a client_id".into()));
    }
    Ok(())
}

fn broker_down(e: impl std::fmt::Display) -> AppError {
    AppError::Unavailable(format!("the room broker is unavailable: {e}"))
}

/// Disconnects every connection of a user, or one connection: WebSockets close with 4003,
/// SSE streams end. With Redis every node does the same with its own connections; the
/// count is this node's.
#[utoipa::path(
    post, path = "/admin/disconnect", tag = "admin", request_body = Clients,
    responses(
        (status = 200, description = "Disconnected", body = Affected),
        (status = 401, description = "No API key or admin token", body = ErrorBody),
        (status = 403, description = "The token is not an admin's", body = ErrorBody),
        (status = 422, description = "Neither user nor client_id", body = ErrorBody)
    )
)]
pub async fn disconnect(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Clients>,
) -> Result<web::Json<Affected>, AppError> {
    meets(&grant(&state, &req)?.identity, Need::Admin)?;
    let Clients { user, client_id } = body.into_inner();
    chosen(&user, &client_id)?;
    let connections = state
        .realtime
        .broker
        .send(DisconnectClients {
            user,
            client: client_id,
        })
        .await
        .map_err(broker_down)?;
    Ok(web::Json(Affected { connections }))
}

/// Takes a user's connections, or one connection, out of a room (they get `left`).
#[utoipa::path(
    post, path = "/admin/unsubscribe", tag = "admin", request_body = RoomClients,
    responses(
        (status = 200, description = "Unsubscribed", body = Affected),
        (status = 401, description = "No API key or admin token", body = ErrorBody),
        (status = 403, description = "The token is not an admin's", body = ErrorBody),
        (status = 422, description = "A bad room, or neither user nor client_id", body = ErrorBody)
    )
)]
pub async fn unsubscribe(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<RoomClients>,
) -> Result<web::Json<Affected>, AppError> {
    meets(&grant(&state, &req)?.identity, Need::Admin)?;
    let RoomClients {
        room,
        user,
        client_id,
    } = body.into_inner();
    validate_room(&room).map_err(AppError::Unprocessable)?;
    chosen(&user, &client_id)?;
    let connections = state
        .realtime
        .broker
        .send(Unsubscribe {
            room,
            user,
            client: client_id,
        })
        .await
        .map_err(broker_down)?;
    Ok(web::Json(Affected { connections }))
}
