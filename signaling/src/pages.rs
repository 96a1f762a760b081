//! The embedded web pages (`client-web/` at `/`, `admin-web/` at `/admin/`)
//! and the security headers every answer carries.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir};

static CLIENT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../client-web");
static ADMIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../admin-web");

/// The Content-Security-Policy before `connect-src`'s origins.
const CSP_HEAD: &str = "default-src 'self'; connect-src 'self'";
/// The Content-Security-Policy after `connect-src`'s origins.
const CSP_TAIL: &str = "; media-src 'self' blob:; img-src 'self' blob: data:; style-src 'self'; \
script-src 'self'; frame-ancestors 'none'";

/// The page's CSP: scripts may connect to the page's own origin (its
/// WebSocket forms named too, for browsers whose `'self'` does not cover
/// `ws:`) and to the SFU nodes' WebSocket origins, nothing else.
pub fn csp(host: Option<&str>, sfu_origins: &[String]) -> String {
    let mut out = String::from(CSP_HEAD);
    if let Some(host) = host.filter(|h| valid_host(h)) {
        out.push_str(&format!(" ws://{host} wss://{host}"));
    }
    for o in sfu_origins {
        out.push(' ');
        out.push_str(o);
    }
    out.push_str(CSP_TAIL);
    out
}

/// A `Host` header that can be put in a header value as is: a name or
/// address with an optional port, nothing that would end the source list.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The origin (`wss://host:port`) of a node's WebSocket URL, if it is one.
pub fn ws_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "ws" && scheme != "wss" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    valid_host(host).then(|| format!("{scheme}://{host}"))
}

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

/// Languages of the visitor page: the names of `client-web/locales/*.json`.
pub fn client_languages() -> Vec<&'static str> {
    CLIENT
        .get_dir("locales")
        .map(|d| d.files().filter_map(|f| f.path().file_stem()?.to_str()).collect())
        .unwrap_or_default()
}

/// The best of `supported` for an `Accept-Language` header: by q-value, an
/// exact tag first, then the primary subtag (`de-AT` → `de`, `pt` → `pt-BR`).
pub fn negotiate_language<'a>(accept: &str, supported: &[&'a str]) -> Option<&'a str> {
    let mut wanted: Vec<(f32, usize, &str)> = accept
        .split(',')
        .take(32)
        .enumerate()
        .filter_map(|(i, part)| {
            let mut it = part.split(';');
            let tag = it.next()?.trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            (!tag.is_empty() && tag != "*" && q > 0.0).then_some((q, i, tag))
        })
        .collect();
    wanted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    wanted.iter().find_map(|(_, _, tag)| {
        let primary = tag.split('-').next().unwrap_or_default();
        supported
            .iter()
            .find(|s| s.eq_ignore_ascii_case(tag))
            .or_else(|| {
                supported.iter().find(|s| {
                    s.split('-')
                        .next()
                        .is_some_and(|p| p.eq_ignore_ascii_case(primary))
                })
            })
            .copied()
    })
}

/// `GET /api/lang`: the visitor page's language for this request's
/// `Accept-Language` (`{"lang": "de", "languages": [...]}`; English when nothing matches).
pub async fn ui_language(headers: axum::http::HeaderMap) -> axum::Json<UiLanguage> {
    let supported = client_languages();
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let lang = negotiate_language(accept, &supported).unwrap_or("en");
    axum::Json(UiLanguage {
        lang,
        languages: supported,
    })
}

/// `GET /api/lang` answer.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct UiLanguage {
    /// The language to show.
    pub lang: &'static str,
    /// Every language the page has.
    pub languages: Vec<&'static str>,
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

/// Adds CSP and the usual security headers to every answer, and
/// `Cache-Control: no-store` to every API answer (they carry tokens and
/// personal data that no cache should keep).
pub async fn security_headers(
    State(state): State<crate::AppState>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    let mut policy = csp(host.as_deref(), &state.inner.sfu_origins.read());
    // The challenge widget's script and frame, when challenges are on.
    if let Some(o) = state
        .inner
        .captcha
        .as_ref()
        .and_then(crate::captcha::Captcha::script_origin)
    {
        policy = policy.replace(
            "script-src 'self'",
            &format!("script-src 'self' {o}; frame-src {o}"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&policy) {
        h.entry(header::CONTENT_SECURITY_POLICY).or_insert(v);
    }
    if api {
        set(h, header::CACHE_CONTROL, "no-store");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_allows_the_pages_own_origin_and_the_sfu_origins_only() {
        let p = csp(Some("duet.example:8443"), &["wss://eu-1.example.org".to_owned()]);
        assert!(
            p.contains(
                "connect-src 'self' ws://duet.example:8443 wss://duet.example:8443 wss://eu-1.example.org;"
            ),
            "{p}"
        );
        assert!(!p.contains(" ws: ") && !p.contains(" wss:;"), "{p}");
        // A forged Host cannot add sources or directives.
        let p = csp(Some("evil.com; script-src *"), &[]);
        assert!(
            p.starts_with("default-src 'self'; connect-src 'self'; media-src"),
            "{p}"
        );
    }

    #[test]
    fn node_urls_give_their_websocket_origin() {
        assert_eq!(
            ws_origin("wss://eu-1.example.org/sfu/ws").as_deref(),
            Some("wss://eu-1.example.org")
        );
        assert_eq!(
            ws_origin("ws://127.0.0.1:8080/sfu/ws").as_deref(),
            Some("ws://127.0.0.1:8080")
        );
        assert_eq!(ws_origin("http://x/sfu/ws"), None);
        assert_eq!(ws_origin("wss://a b/"), None);
    }

    const LANGS: &[&str] = &["de", "en", "es", "pt-BR"];

    #[test]
    fn the_highest_quality_supported_language_wins() {
        assert_eq!(
            negotiate_language("fr;q=1, de;q=0.8, en;q=0.5", LANGS),
            Some("de")
        );
        assert_eq!(negotiate_language("en;q=0.4, es", LANGS), Some("es"));
    }

    #[test]
    fn a_regional_tag_matches_its_language_and_a_language_its_region() {
        assert_eq!(negotiate_language("de-AT", LANGS), Some("de"));
        assert_eq!(negotiate_language("pt", LANGS), Some("pt-BR"));
        assert_eq!(negotiate_language("PT-br", LANGS), Some("pt-BR"));
    }

    #[test]
    fn nothing_supported_or_garbage_gives_none() {
        assert_eq!(negotiate_language("fr, ja;q=0.5", LANGS), None);
        assert_eq!(negotiate_language("", LANGS), None);
        assert_eq!(negotiate_language("de;q=abc, *;q=0.1, es;q=0", LANGS), None);
    }
}
