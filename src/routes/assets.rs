//! What the server serves from its own binary: the demo page, the JavaScript client
//! (`/client.js`, with its TypeScript declarations at `/client.d.ts`) and its icon. Each is
//! sent with an `ETag` and `Cache-Control`, and a matching `If-None-Match` gets 304.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// How long browsers may use a cached copy before asking again (with `If-None-Match`).
pub const ASSET_MAX_AGE_SECS: u32 = 300;

/// The demo chat-and-dashboard page (no build step, no external assets).
const INDEX_HTML: &str = include_str!("../static/index.html");
/// The JavaScript client library.
const CLIENT_JS: &str = include_str!("../../clients/js/courier.js");
/// Its TypeScript declarations.
const CLIENT_DTS: &str = include_str!("../../clients/js/courier.d.ts");
/// The page's icon.
const FAVICON_SVG: &str = include_str!("../static/favicon.svg");

/// A body with its content type and entity tag.
pub struct Asset {
    /// Shared: each response takes a reference, not a copy.
    body: actix_web::web::Bytes,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    /// An asset; its `ETag` is a digest of the body.
    pub fn new(body: Vec<u8>, content_type: &'static str) -> Self {
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Self {
            body: body.into(),
            content_type,
            etag,
        }
    }

    /// 200 with the body, or 304 when the request already has this version.
    pub fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let cached = req
            .headers()
            .get_all(header::IF_NONE_MATCH)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == self.etag
            });
        let mut res = if cached {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        res.insert_header((header::ETAG, self.etag.clone()))
            .insert_header((
                header::CACHE_CONTROL,
                format!("public, max-age={ASSET_MAX_AGE_SECS}"),
            ));
        if cached {
            return res.finish();
        }
        res.content_type(self.content_type).body(self.body.clone())
    }
}

fn asset(
    cell: &'static std::sync::OnceLock<Asset>,
    body: &'static str,
    content_type: &'static str,
) -> &'static Asset {
    cell.get_or_init(|| Asset::new(body.as_bytes().to_vec(), content_type))
}

/// `GET /`: the demo page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    static CELL: std::sync::OnceLock<Asset> = std::sync::OnceLock::new();
    asset(&CELL, INDEX_HTML, "text/html; charset=utf-8").respond(&req)
}

/// `GET /client.js`: the JavaScript client (an ES module).
pub async fn client_js(req: HttpRequest) -> HttpResponse {
    static CELL: std::sync::OnceLock<Asset> = std::sync::OnceLock::new();
    asset(&CELL, CLIENT_JS, "text/javascript; charset=utf-8").respond(&req)
}

/// `GET /client.d.ts`: the client's TypeScript declarations.
pub async fn client_dts(req: HttpRequest) -> HttpResponse {
    static CELL: std::sync::OnceLock<Asset> = std::sync::OnceLock::new();
    asset(&CELL, CLIENT_DTS, "application/typescript; charset=utf-8").respond(&req)
}

/// `GET /favicon.svg` (and `/favicon.ico`, which browsers ask for by themselves).
pub async fn favicon(req: HttpRequest) -> HttpResponse {
    static CELL: std::sync::OnceLock<Asset> = std::sync::OnceLock::new();
    asset(&CELL, FAVICON_SVG, "image/svg+xml").respond(&req)
}
