//! JSON request bodies of the HTTP APIs, read as their handlers' extractors
//! read them (`serde_json` from the body bytes): the visitor API
//! (`/api/session`, `/api/reports`, appeals), the moderator API (login,
//! report actions, bans, accounts, settings, wall), the screening workers'
//! API, and the SFU node's internal API. The first byte picks the type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

fn parse<T: DeserializeOwned>(body: &[u8]) {
    let _ = serde_json::from_slice::<T>(body);
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    use signaling::admin;
    match which % 19 {
        // Visitor API.
        0 => parse::<proto::signal::SessionRequest>(body),
        1 => parse::<proto::signal::ReportRequest>(body),
        2 => parse::<admin::appeals::AppealRequest>(body),
        // Moderator API.
        3 => parse::<admin::auth::LoginRequest>(body),
        4 => parse::<admin::reports::ActionRequest>(body),
        5 => parse::<admin::bans::CreateBan>(body),
        6 => parse::<admin::bans::UnbanRequest>(body),
        7 => parse::<admin::appeals::DecisionRequest>(body),
        8 => parse::<admin::wall::ViewRequest>(body),
        9 => parse::<admin::accounts::CreateModerator>(body),
        10 => parse::<admin::accounts::UpdateModerator>(body),
        11 => parse::<admin::accounts::PutSettings>(body),
        // Screening workers.
        12 => parse::<proto::screen_api::ClaimRequest>(body),
        13 => parse::<proto::screen_api::ScreeningResult>(body),
        // SFU internal API.
        14 => parse::<proto::sfu_api::AdmitRequest>(body),
        15 => parse::<proto::sfu_api::VideoHold>(body),
        16 => parse::<proto::sfu_api::LinkRequest>(body),
        17 => parse::<proto::sfu_api::WatchRequest>(body),
        _ => parse::<proto::sfu_api::KeyframeInterval>(body),
    }
});
