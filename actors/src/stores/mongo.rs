//! The MongoDB client (the official `mongodb` driver).

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use mongodb::Client;

use super::StoreError;

const STORE: &str = "mongodb";

/// Builds the client. It connects in the background; a server that is down makes
/// operations fail after `timeout` (server selection), not start-up.
pub async fn client(uri: &str, timeout: Duration, app_name: &str) -> Result<Client, StoreError> {
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| StoreError::Unavailable {
            store: STORE,
            reason: e.to_string(),
        })?;
    options.connect_timeout = Some(timeout);
    options.server_selection_timeout = Some(timeout);
    options.app_name = Some(app_name.to_owned());
    Client::with_options(options).map_err(|e| StoreError::Unavailable {
        store: STORE,
        reason: e.to_string(),
    })
}

/// Sends `ping` to the `admin` database.
pub async fn ping(client: &Client) -> Result<(), StoreError> {
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .map(|_| ())
        .map_err(|e| StoreError::Unavailable {
            store: STORE,
            reason: e.to_string(),
        })
}
