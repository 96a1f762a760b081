//! The embedded web pages (`client-web/` at `/`, `admin-web/` at `/admin/`)
//! and the security headers every answer carries.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir};

static CLIENT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../client-web");
static ADMIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../admin-web");

pub const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; \
img-src 'self' blob: data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

fn serve(dir: &'static Dir<'static>, path: &str) -> Response {
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    };
    if path.split('/').any(|seg| seg == ".." || seg.starts_with('.')) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let file = dir.get_file(&path).or_else(|| {
        // `/foo` → `/foo/index.html`
        dir.get_file(format!("{path}/index.html"))
    });
    match file {
        Some(f) => {
            let cache = if path.ends_with(".html") {
                "no-cache"
            } else {
                "public, max-age=300"
            };
            (
                [
                    (
                        header::CONTENT_TYPE,
                        content_type(f.path().to_str().unwrap_or("")),
                    ),
                    (header::CACHE_CONTROL, cache),
                ],
                f.contents(),
            )
                .into_response()
        }
        None => crate::error::ApiError::not_found("no such page").into_response(),
    }
}

async fn client_index() -> Response {
    serve(&CLIENT, "")
}
async fn client_file(Path(path): Path<String>) -> Response {
    serve(&CLIENT, &path)
}
async fn admin_index() -> Response {
    serve(&ADMIN, "")
}
async fn admin_file(Path(path): Path<String>) -> Response {
    serve(&ADMIN, &path)
}

/// Page routes. `/{*path}` only matches what no other route (API, SFU,
/// metrics) claims.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(client_index))
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route("/admin/", get(admin_index))
        .route("/admin/{*path}", get(admin_file))
        .route("/{*path}", get(client_file))
}

/// Adds CSP and the usual security headers to every answer.
pub async fn security_headers(req: Request<Body>, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(
        h,
        HeaderName::from_static("permissions-policy"),
        "camera=(self), microphone=(self), geolocation=(), payment=()",
    );
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    resp
}
