//! Which routes need whom: the one table of route protections, the guard that enforces it
//! (when `REQUIRE_AUTH` is on, as it always is in production), and the OpenAPI security of
//! each route, taken from the same table.
//!
//! Rooms are not here: who may join, publish, read history or see presence in a room is
//! decided by its namespace ([`courier_actors::access`]), on every transport alike.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use courier_actors::access::{Grant, Identity};

use crate::auth::grant_of;
use crate::error::AppError;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone: the route reads or writes nobody's data (or rooms decide for themselves).
    Anyone,
    /// A user (a valid token) or the API key: the route reads or writes data.
    User,
    /// The API key, or a token with the `admin` role: the route shows everyone's data or
    /// runs the server.
    Admin,
}

/// Every route that needs more than [`Need::Anyone`]: method, path (as routed) and need.
/// README's table of route protections is this table.
pub const PROTECTED: &[(&str, &str, Need)] = &[
    ("POST", "/users", Need::User),
    ("GET", "/users", Need::User),
    ("POST", "/users/batch", Need::User),
    ("GET", "/users/{id}", Need::User),
    ("GET", "/users-fast/{id}", Need::User),
    ("POST", "/users/{id}/action", Need::User),
    ("POST", "/orders", Need::User),
    ("POST", "/posts", Need::User),
    ("GET", "/posts/{id}", Need::User),
    ("POST", "/posts/{id}/comments", Need::User),
    ("GET", "/data", Need::User),
    ("POST", "/data", Need::User),
    ("POST", "/documents", Need::User),
    ("GET", "/documents/{id}", Need::User),
    ("POST", "/upload", Need::User),
    ("GET", "/download/{filename}", Need::User),
    ("POST", "/send-email", Need::User),
    ("GET", "/aggregate/user/{id}", Need::User),
    ("GET", "/jobs/{id}", Need::User),
    ("GET", "/jobs/{id}/events", Need::User),
    ("GET", "/export/users", Need::Admin),
    ("GET", "/generate/report", Need::Admin),
    ("GET", "/dashboard", Need::Admin),
    ("GET", "/outbox", Need::Admin),
    ("GET", "/jobs", Need::Admin),
    ("GET", "/analytics", Need::Admin),
    ("GET", "/metrics", Need::Admin),
    ("GET", "/sse/updates", Need::Admin),
    ("POST", "/admin/disconnect", Need::Admin),
    ("POST", "/admin/unsubscribe", Need::Admin),
];

/// What `path` (as routed) needs for `method`.
pub fn need_of(method: &str, path: &str) -> Need {
    PROTECTED
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map_or(Need::Anyone, |(_, _, need)| *need)
}

/// Who the request is (the server API, a user, or a guest); an invalid key or token is 401.
pub fn grant(state: &AppState, req: &HttpRequest) -> Result<Grant, AppError> {
    Ok(grant_of(
        &state.config.jwt_secret,
        &state.config.api_keys,
        req,
    )?)
}

/// Whether `identity` meets `need`; the error a client sees when not.
pub fn meets(identity: &Identity, need: Need) -> Result<(), AppError> {
    match need {
        Need::Anyone => Ok(()),
        Need::User if identity.user.is_some() || identity.superuser() => Ok(()),
        Need::Admin if identity.superuser() => Ok(()),
        Need::User => Err(AppError::Unauthorized(
            "this route needs a token (Authorization: Bearer) or an API key".into(),
        )),
        Need::Admin if identity.user.is_some() => Err(AppError::Forbidden(
            "this route needs the API key or a token with the admin role".into(),
        )),
        Need::Admin => Err(AppError::Unauthorized(
            "this route needs the API key or a token with the admin role".into(),
        )),
    }
}

/// The guard every resource is wrapped in: with `REQUIRE_AUTH` off it lets everything
/// through; on, a route of [`PROTECTED`] answers 401/403 in the one error shape before its
/// handler runs. The checked identity is left in the request's extensions.
pub async fn protect(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("the application state is registered");
    if !state.config.require_auth {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let state = state.clone();
    let need = need_of(
        req.method().as_str(),
        req.match_pattern().as_deref().unwrap_or(""),
    );
    if need != Need::Anyone {
        let checked = grant(&state, req.request()).and_then(|g| {
            meets(&g.identity, need)?;
            Ok(g)
        });
        match checked {
            Ok(g) => {
                req.extensions_mut().insert(g.identity);
            }
            Err(e) => {
                let (req, _) = req.into_parts();
                // With the error attached, so telemetry renders it with the request id.
                let res = actix_web::HttpResponse::from_error(e);
                return Ok(ServiceResponse::new(req, res).map_into_right_body());
            }
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Adds each protected route's security (bearer or API key) to the OpenAPI document.
pub struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        for (method, path, need) in PROTECTED {
            let Some(item) = openapi.paths.paths.get_mut(*path) else {
                continue;
            };
            let operation = match *method {
                "GET" => item.get.as_mut(),
                "POST" => item.post.as_mut(),
                _ => None,
            };
            let Some(operation) = operation else { continue };
            let mut security = vec![SecurityRequirement::new("api_key", Vec::<String>::new())];
            if *need == Need::User {
                security.insert(0, SecurityRequirement::new("bearer", Vec::<String>::new()));
            } else {
                // The admin role rides on a bearer token too.
                security.push(SecurityRequirement::new("bearer", ["admin"]));
            }
            operation.security = Some(security);
        }
    }
}
