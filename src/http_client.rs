//! The shared upstream HTTP client and how its failures map to HTTP errors.
//!
//! `awc::Client` is single-threaded, so each worker thread builds one client at start-up
//! and every handler on that worker shares it: its connection pool keeps upstream
//! connections alive and bounds how many are open (`HTTP_CLIENT_MAX_CONNECTIONS` per
//! worker). Every call is bounded by the connect timeout and the total timeout.

use awc::error::{ConnectError, SendRequestError};
use serde_json::Value;

use crate::config::HttpClientConfig;
use crate::error::AppError;

/// Builds one worker's client.
pub fn build_client(cfg: &HttpClientConfig) -> awc::Client {
    let connector = awc::Connector::new()
        .timeout(cfg.connect_timeout)
        .limit(cfg.max_connections)
        .conn_keep_alive(cfg.keep_alive);
    awc::Client::builder()
        .connector(connector)
        .timeout(cfg.timeout)
        .add_default_header((
            awc::http::header::USER_AGENT,
            concat!("courier/", env!("CARGO_PKG_VERSION")),
        ))
        .finish()
}

/// GETs `url` and returns its JSON body. Unreachable or failing upstream → 502; no answer
/// within the timeouts → 504.
pub async fn get_json(
    client: &awc::Client,
    url: &str,
    cfg: &HttpClientConfig,
) -> Result<Value, AppError> {
    let call = async {
        let mut response = client
            .get(url)
            .insert_header((awc::http::header::ACCEPT, "application/json"))
            .send()
            .await
            .map_err(map_send_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(AppError::BadGateway(format!(
                "upstream answered {}",
                status.as_u16()
            )));
        }
        response
            .json::<Value>()
            .limit(cfg.max_response_bytes)
            .await
            .map_err(|e| AppError::BadGateway(format!("upstream sent an unusable body: {e}")))
    };
    // The client's timeout covers sending and the response head; this one also covers
    // reading the body.
    match actix_rt::time::timeout(cfg.timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(timeout_error(cfg)),
    }
}

fn timeout_error(cfg: &HttpClientConfig) -> AppError {
    AppError::GatewayTimeout(format!(
        "upstream did not answer within {} ms",
        cfg.timeout.as_millis()
    ))
}

fn map_send_error(err: SendRequestError) -> AppError {
    match err {
        SendRequestError::Timeout => {
            AppError::GatewayTimeout("upstream did not answer in time".into())
        }
        SendRequestError::Connect(ConnectError::Timeout) => {
            AppError::GatewayTimeout("connecting to the upstream timed out".into())
        }
        SendRequestError::Connect(e) => {
            AppError::BadGateway(format!("could not connect to the upstream: {e}"))
        }
        other => AppError::BadGateway(format!("upstream request failed: {other}")),
    }
}
