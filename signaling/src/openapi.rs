//! The OpenAPI 3.1 documents of the visitor API (`/api/openapi.json`) and
//! the moderator API (`/api/admin/openapi.json`), and the JSON Schema of
//! the WebSocket messages (`/api/ws.schema.json`), built from the types the
//! handlers read and answer (see `proto::openapi`). docs/api-signaling.md
//! and docs/api-admin.md are the prose guides beside them.

use crate::admin::{
    accounts, analytics, appeals, audit, auth, bans, reports, templates, wall, watch, RetentionCounts,
    MAX_ADMIN_BODY,
};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use proto::openapi::ApiDoc;
use proto::signal::{ReportCreated, ReportRequest, SessionRequest, SessionResponse, Stats};
use serde_json::{json, Value};
use std::sync::LazyLock;

/// Path of the visitor API's document.
pub const PATH_PUBLIC: &str = "/api/openapi.json";
/// Path of the moderator API's document.
pub const PATH_MODERATOR: &str = "/api/admin/openapi.json";
/// Path of the WebSocket messages' JSON Schema.
pub const PATH_WS_SCHEMA: &str = "/api/ws.schema.json";

fn any_json() -> Value {
    json!({"type": "object"})
}

fn csv() -> Value {
    json!({"type": "string", "contentMediaType": "text/csv"})
}

fn webp() -> Value {
    json!({"type": "string", "contentMediaType": "image/webp"})
}

/// The visitor API. `max_body` is the configured JSON body limit.
pub fn public(max_body: usize) -> Value {
    ApiDoc::new(
        "duet visitor API",
        "Sessions, reports, appeals and public figures. Every error is JSON `ErrorBody`; rate limits answer 429 \
         with `Retry-After`. The WebSocket `/ws` messages are described by `/api/ws.schema.json`. \
         See docs/api-signaling.md.",
    )
    .bearer("session", "JWT", "The session token from `POST /api/session` (audience `duet-session`).")
    .tag("visit", "A visit: its session and reports.")
    .tag("appeals", "Appealing a ban.")
    .tag("info", "Public figures, page settings and these documents.")
    .op("post", "/api/session", "create_session", |o| {
        o.tag("visit")
            .summary("Start a visit: ban check, SFU placement, tokens and ICE servers")
            .description(
                "Rate limited per IP and per device. A banned device or IP gets 403 with `ban` (the statement \
                 of reasons and, while appealable, an appeal token). With challenges on, a suspicious visitor \
                 gets 403 `captcha_required` until the `x-captcha-token` header carries a solved challenge.",
            )
            .header(crate::api::CAPTCHA_HEADER, "The token of a solved challenge.")
            .header(crate::api::REGION_HEADER, "The visitor's region, as an ingress sets it.")
            .body::<SessionRequest>(max_body)
            .ok::<SessionResponse>(200, "The session.")
            .errors(&[403, 429, 503]);
    })
    .op("post", "/api/reports", "create_report", |o| {
        o.tag("visit")
            .summary("Report the current or last partner (stored before the answer)")
            .auth("session")
            .body::<ReportRequest>(max_body)
            .ok::<ReportCreated>(201, "Stored; the pair is unlinked and never matched again.")
            .errors(&[409, 429, 503]);
    })
    .op("post", "/api/appeals", "create_appeal", |o| {
        o.tag("appeals")
            .summary("Appeal a ban once, with the appeal token of its notice (`ban.appeal_token`)")
            .body::<appeals::AppealRequest>(max_body)
            .ok::<appeals::AppealCreated>(201, "The appeal is pending.")
            .errors(&[401, 403, 409, 429, 503]);
    })
    .op("get", "/api/stats", "stats", |o| {
        o.tag("info")
            .summary("How many are online and waiting")
            .ok::<Stats>(200, "The figures.")
            .errors(&[503]);
    })
    .op("get", "/api/captcha", "captcha", |o| {
        o.tag("info")
            .summary("Whether challenges are on and how the page renders one")
            .ok::<crate::captcha::WidgetConfig>(200, "The widget settings.");
    })
    .op("get", "/api/lang", "ui_language", |o| {
        o.tag("info")
            .summary("The page language for this request's Accept-Language")
            .ok::<crate::pages::UiLanguage>(200, "The language and every supported one.");
    })
    .op("get", PATH_PUBLIC, "openapi", |o| {
        o.tag("info")
            .summary("This document")
            .ok_raw(200, "OpenAPI 3.1.", "application/json", any_json());
    })
    .op("get", PATH_WS_SCHEMA, "ws_schema", |o| {
        o.tag("info")
            .summary("JSON Schema of the WebSocket messages (signaling `/ws` and SFU `/sfu/ws`)")
            .ok_raw(200, "JSON Schema 2020-12.", "application/json", any_json());
    })
    .into_json()
}

/// The moderator API. Every route but `login` and this document needs a
/// moderator token whose role is at least the route's (403 otherwise).
pub fn moderator(max_body: usize) -> Value {
    let m = MAX_ADMIN_BODY;
    let mut doc = ApiDoc::new(
        "duet moderator API",
        "The moderation pages' API: the wall of live calls, watching, reports, bans, appeals, the audit log, \
         analytics, accounts and settings. Every route but `login` needs `Authorization: Bearer <moderator \
         token>` and a role at least the route's (`moderator` < `senior` < `admin`; 403 below). Every error \
         is JSON `ErrorBody`. See docs/api-admin.md.",
    )
    .bearer(
        "moderator",
        "JWT",
        "The moderator token from `POST /api/admin/login` (audience `duet-moderator`).",
    )
    .tag("session", "Logging in and out.")
    .tag("wall", "Live calls: snapshots, watching, ending.")
    .tag("reports", "The report queue.")
    .tag("bans", "Bans and their CSV exchange.")
    .tag("appeals", "Appeals of bans.")
    .tag("audit", "The audit log.")
    .tag("admin", "Accounts, settings, retention (role admin).")
    .op("post", "/api/admin/login", "login", |o| {
        o.tag("session")
            .summary("Log in with email and password")
            .description("Rate limited per IP; an account locks after repeated wrong passwords (403).")
            .body::<auth::LoginRequest>(max_body)
            .ok::<auth::LoginResponse>(200, "A moderator token.")
            .errors(&[401, 403, 429, 503]);
    })
    .op("get", PATH_MODERATOR, "openapi", |o| {
        o.tag("session")
            .summary("This document")
            .ok_raw(200, "OpenAPI 3.1.", "application/json", any_json());
    })
    .op("post", "/api/admin/logout", "logout", |o| {
        o.tag("session").summary("End this token's session").auth("moderator").empty(204, "Logged out.");
    })
    .op("post", "/api/admin/refresh", "refresh", |o| {
        o.tag("session")
            .summary("A fresh token for the same session")
            .auth("moderator")
            .ok::<auth::LoginResponse>(200, "A new token.");
    })
    .op("get", "/api/admin/me", "me", |o| {
        o.tag("session").summary("Who this token is").auth("moderator").ok::<auth::MeView>(200, "The moderator.");
    })
    .op("get", "/api/admin/templates", "templates", |o| {
        o.tag("reports")
            .summary("Ban reason templates and durations")
            .auth("moderator")
            .ok::<templates::Templates>(200, "The templates.");
    })
    .op("get", "/api/admin/wall", "wall", |o| {
        o.tag("wall")
            .summary("Live pairings, for the wall of snapshots")
            .auth("moderator")
            .query::<wall::WallQuery>()
            .ok::<wall::Wall>(200, "The pairings.");
    })
    .op("get", "/api/admin/pairings/{pairing}/snapshot/{side}", "pairing_snapshot", |o| {
        o.tag("wall")
            .summary("The latest keyframe of one side (`a` or `b`) of a live pairing")
            .auth("moderator")
            .ok_raw(200, "The keyframe.", "image/webp", webp())
            .errors(&[400, 404]);
    })
    .op("post", "/api/admin/pairings/{pairing}/view", "pairing_view", |o| {
        o.tag("wall")
            .summary("Record that a moderator looked at a pairing")
            .auth("moderator")
            .body::<wall::ViewRequest>(m)
            .empty(204, "Recorded.")
            .errors(&[404]);
    })
    .op("post", "/api/admin/pairings/{pairing}/end", "pairing_end", |o| {
        o.tag("wall").summary("End a live call").auth("moderator").empty(204, "Ended.").errors(&[404]);
    })
    .op("post", "/api/admin/pairings/{pairing}/screening/clear", "pairing_screening_clear", |o| {
        o.tag("wall")
            .summary("A moderator found nothing wrong with a flagged call: it is not flagged again")
            .auth("moderator")
            .empty(204, "Cleared.")
            .errors(&[404]);
    })
    .op("post", "/api/admin/pairings/{pairing}/watch", "pairing_watch", |o| {
        o.tag("wall")
            .summary("Watch a live call as a hidden, receive-only participant")
            .auth("moderator")
            .ok::<watch::WatchStarted>(200, "Where to connect.")
            .errors(&[404, 409]);
    })
    .op("delete", "/api/admin/watches/{watch}", "watch_stop", |o| {
        o.tag("wall").summary("Stop watching").auth("moderator").empty(204, "Stopped.").errors(&[404]);
    })
    .op("get", "/api/admin/reports", "reports", |o| {
        o.tag("reports")
            .summary("The report queue")
            .auth("moderator")
            .query::<reports::ListQuery>()
            .ok::<reports::ReportList>(200, "A page of reports.");
    })
    .op("get", "/api/admin/reports/{report}", "report", |o| {
        o.tag("reports")
            .summary("One report with its evidence and the devices' history")
            .auth("moderator")
            .ok::<reports::ReportDetail>(200, "The report.")
            .errors(&[404]);
    })
    .op("get", "/api/admin/reports/{report}/snapshots/{snapshot}", "report_snapshot", |o| {
        o.tag("reports")
            .summary("A snapshot kept as evidence")
            .auth("moderator")
            .ok_raw(200, "The image.", "image/webp", webp())
            .errors(&[404]);
    })
    .op("post", "/api/admin/reports/{report}/action", "report_action", |o| {
        o.tag("reports")
            .summary("Dismiss a report or act on it (ban, end the call)")
            .auth("moderator")
            .body::<reports::ActionRequest>(m)
            .ok::<reports::ActionDone>(200, "Done.")
            .errors(&[403, 404, 409]);
    })
    .op("get", "/api/admin/bans", "bans", |o| {
        o.tag("bans")
            .summary("Bans (active by default)")
            .auth("moderator")
            .query::<bans::ListQuery>()
            .ok::<bans::BanList>(200, "A page of bans.");
    })
    .op("post", "/api/admin/bans", "ban_create", |o| {
        o.tag("bans")
            .summary("Ban a device or an IP (permanent bans need a senior)")
            .auth("moderator")
            .body::<bans::CreateBan>(m)
            .ok::<bans::BanCreated>(201, "The ban is in force.")
            .errors(&[403, 409]);
    })
    .op("post", "/api/admin/bans/unban", "ban_lift", |o| {
        o.tag("bans")
            .summary("Lift bans")
            .auth("moderator")
            .body::<bans::UnbanRequest>(m)
            .ok::<bans::Unbanned>(200, "Lifted (and what was skipped).")
            .errors(&[403]);
    })
    .op("get", "/api/admin/bans/export", "ban_export", |o| {
        o.tag("bans")
            .summary("Bans as CSV")
            .auth("moderator")
            .query::<bans::ListQuery>()
            .ok_raw(200, "CSV with a header row.", "text/csv", csv());
    })
    .op("post", "/api/admin/bans/import", "ban_import", |o| {
        o.tag("bans")
            .summary("Import bans from CSV (all rows or none)")
            .auth("moderator")
            .raw_body("text/csv", csv(), m)
            .ok::<bans::Imported>(200, "Imported.")
            .errors(&[403, 415]);
    })
    .op("get", "/api/admin/appeals", "appeals", |o| {
        o.tag("appeals")
            .summary("Appeals (pending by default)")
            .auth("moderator")
            .query::<appeals::ListQuery>()
            .ok::<appeals::AppealList>(200, "A page of appeals.");
    })
    .op("get", "/api/admin/appeals/{appeal}", "appeal", |o| {
        o.tag("appeals")
            .summary("One appeal with its ban")
            .auth("moderator")
            .ok::<appeals::AppealDetail>(200, "The appeal.")
            .errors(&[404]);
    })
    .op("post", "/api/admin/appeals/{appeal}/decision", "appeal_decide", |o| {
        o.tag("appeals")
            .summary("Uphold or lift (role senior; never one's own ban)")
            .auth("moderator")
            .body::<appeals::DecisionRequest>(m)
            .ok::<appeals::Decided>(200, "Decided.")
            .errors(&[403, 404, 409]);
    })
    .op("get", "/api/admin/audit", "audit", |o| {
        o.tag("audit")
            .summary("The audit log")
            .auth("moderator")
            .query::<audit::AuditQuery>()
            .ok::<audit::AuditPage>(200, "A page of entries.");
    })
    .op("get", "/api/admin/audit/export", "audit_export", |o| {
        o.tag("audit")
            .summary("The audit log as CSV")
            .auth("moderator")
            .query::<audit::AuditQuery>()
            .ok_raw(200, "CSV with a header row.", "text/csv", csv());
    })
    .op("get", "/api/admin/analytics", "analytics", |o| {
        o.tag("audit")
            .summary("Queue, call and moderation figures")
            .auth("moderator")
            .ok::<analytics::Analytics>(200, "The figures.");
    })
    .op("get", "/api/admin/moderators", "moderators", |o| {
        o.tag("admin")
            .summary("Moderator accounts (role admin)")
            .auth("moderator")
            .ok::<accounts::ModeratorList>(200, "The accounts.")
            .errors(&[403]);
    })
    .op("post", "/api/admin/moderators", "moderator_create", |o| {
        o.tag("admin")
            .summary("Create an account (role admin)")
            .auth("moderator")
            .body::<accounts::CreateModerator>(m)
            .ok::<crate::admin::db::ModeratorInfo>(201, "Created.")
            .errors(&[403, 409]);
    })
    .op("patch", "/api/admin/moderators/{moderator}", "moderator_update", |o| {
        o.tag("admin")
            .summary("Change an account's role, password or state (role admin)")
            .auth("moderator")
            .body::<accounts::UpdateModerator>(m)
            .ok::<crate::admin::db::ModeratorInfo>(200, "Changed.")
            .errors(&[403, 404, 409]);
    })
    .op("get", "/api/admin/settings", "settings", |o| {
        o.tag("admin")
            .summary("Run-time settings (role admin)")
            .auth("moderator")
            .ok::<accounts::SettingsView>(200, "The settings.")
            .errors(&[403]);
    })
    .op("put", "/api/admin/settings", "settings_put", |o| {
        o.tag("admin")
            .summary("Change run-time settings (role admin)")
            .auth("moderator")
            .body::<accounts::PutSettings>(m)
            .ok::<accounts::SettingsView>(200, "The settings now.")
            .errors(&[403]);
    })
    .op("post", "/api/admin/retention/run", "retention_run", |o| {
        o.tag("admin")
            .summary("Run the evidence retention job now (role admin)")
            .auth("moderator")
            .ok::<RetentionCounts>(200, "What was deleted.")
            .errors(&[403]);
    })
    .into_json();
    add_common_errors(&mut doc);
    doc
}

/// Every moderator route may also answer these (a store or an SFU node away).
fn add_common_errors(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let error = json!({
        "description": "A dependency (database, Redis, SFU node) is unavailable.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    });
    for item in paths.values_mut() {
        for op in item.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
            if let Some(r) = op.get_mut("responses").and_then(Value::as_object_mut) {
                if op_has_auth(r) {
                    r.entry("503").or_insert_with(|| error.clone());
                    let forbidden = json!({
                        "description": "The token's role is below the route's.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                    });
                    r.entry("403").or_insert(forbidden);
                }
            }
        }
    }
}

fn op_has_auth(responses: &serde_json::Map<String, Value>) -> bool {
    responses.contains_key("401")
}

/// `GET /api/openapi.json`.
pub async fn public_json(axum::extract::State(state): axum::extract::State<crate::AppState>) -> Response {
    json_response(&public(state.inner.config.max_body_bytes))
}

/// `GET /api/admin/openapi.json`.
pub async fn moderator_json(axum::extract::State(state): axum::extract::State<crate::AppState>) -> Response {
    json_response(&moderator(state.inner.config.max_body_bytes))
}

/// `GET /api/ws.schema.json`.
pub async fn ws_schema_json() -> Response {
    static DOC: LazyLock<Value> = LazyLock::new(proto::openapi::ws_schema);
    json_response(&DOC)
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                out.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_moderator_document_names_every_route_of_the_route_table() {
        let doc = moderator(16 * 1024);
        let documented = operations(&doc);
        let mut routes: Vec<(String, String)> = crate::admin::route_table()
            .into_iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        routes.push(("POST".into(), "/api/admin/login".into()));
        routes.push(("GET".into(), PATH_MODERATOR.into()));
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn every_guarded_moderator_route_documents_auth_role_and_unavailability() {
        let doc = moderator(16 * 1024);
        for (method, path) in operations(&doc) {
            let op = &doc["paths"][&path][method.to_ascii_lowercase()];
            if path == "/api/admin/login" || path == PATH_MODERATOR {
                continue;
            }
            for status in ["401", "403", "503"] {
                assert!(op["responses"][status].is_object(), "{method} {path} {status}");
            }
            assert_eq!(op["security"][0]["moderator"], json!([]), "{method} {path}");
        }
    }

    #[test]
    fn the_public_document_has_its_schemas() {
        let doc = public(16 * 1024);
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in [
            "SessionRequest",
            "SessionResponse",
            "ErrorBody",
            "BanNotice",
            "ReportRequest",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
