//! `duet signaling`: the production signaling role (Redis + PostgreSQL).

use super::serve;
use crate::cli::{
    AbuseArgs, CaptchaArgs, CaptchaProvider, FailMode, IcePolicy, MatchingArgs, OnOff, SignalingArgs,
};
use crate::observability;
use crate::secret::Secret;
use crate::shutdown;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Secrets signaling shares with the SFU nodes and TURN relays.
pub struct Shared {
    pub session_secret: Secret,
    pub sfu_token_secret: Secret,
    pub turn_secret: Secret,
    pub internal_token: Secret,
}

#[allow(clippy::too_many_arguments)] // one per part of the config, named at the call sites
pub fn config(
    m: &MatchingArgs,
    abuse: &AbuseArgs,
    secrets: Shared,
    database_url: String,
    redis: Option<(String, String)>,
    region: String,
    region_fallbacks: Vec<String>,
    public_url: String,
) -> signaling::SignalingConfig {
    let mut rate_limits = match m.rate_limits {
        OnOff::On => signaling::RateLimits::default(),
        OnOff::Off => signaling::RateLimits::unlimited(),
    };
    if let Some(n) = abuse.ws_max_per_ip {
        rate_limits.ws_per_ip = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(rate) = abuse.ws_pings_per_sec {
        rate_limits.ws_ping_per_ip = signaling::RateLimit::new(rate.max(0.001), 10);
    }
    let admin = signaling::admin::AdminConfig {
        max_password_checks: abuse.max_password_checks as usize,
        ..Default::default()
    };
    let (redis_url, redis_prefix) = match redis {
        Some((u, p)) => (Some(u), p),
        None => (None, "duet:".to_owned()),
    };
    signaling::SignalingConfig {
        public_url,
        session_secret: secrets.session_secret.as_bytes().to_vec(),
        sfu_token_secret: secrets.sfu_token_secret.as_bytes().to_vec(),
        turn_secret: secrets.turn_secret.as_bytes().to_vec(),
        sfu_internal_token: secrets.internal_token.expose().to_owned(),
        database_url,
        redis_url,
        redis_prefix,
        region,
        region_fallbacks,
        widen_after: Duration::from_secs(m.widen_after_secs),
        cooldown: Duration::from_secs(m.cooldown_secs),
        ice_transport_policy: match m.ice_transport_policy {
            IcePolicy::All => proto::signal::IceTransportPolicy::All,
            IcePolicy::Relay => proto::signal::IceTransportPolicy::Relay,
        },
        rate_limits,
        word_filter: m.filter_words.clone(),
        captcha: captcha_config(&m.captcha),
        ws_idle_timeout: Duration::from_secs(abuse.ws_idle_timeout_secs),
        admin,
        ..Default::default()
    }
}

/// Challenges are on when both the site key and the secret are given.
fn captcha_config(c: &CaptchaArgs) -> Option<signaling::captcha::CaptchaConfig> {
    use signaling::captcha::{FailMode as Mode, Provider, Thresholds};
    // Empty values (e.g. an unset variable in a compose file) mean off.
    let site_key = c.captcha_site_key.clone().filter(|k| !k.trim().is_empty())?;
    let secret = c
        .captcha_secret
        .clone()
        .filter(|s| !s.expose().trim().is_empty())?;
    let provider = match c.captcha_provider {
        CaptchaProvider::Turnstile => Provider::Turnstile,
        CaptchaProvider::Hcaptcha => Provider::Hcaptcha,
    };
    Some(signaling::captcha::CaptchaConfig {
        provider,
        site_key,
        secret: secret.expose().to_owned(),
        verify_url: c
            .captcha_verify_url
            .clone()
            .unwrap_or_else(|| provider.default_verify_url().to_owned()),
        script_url: c
            .captcha_script_url
            .clone()
            .unwrap_or_else(|| provider.default_script_url().to_owned()),
        timeout: Duration::from_millis(c.captcha_timeout_ms),
        fail_mode: match c.captcha_fail_mode {
            FailMode::Closed => Mode::Closed,
            FailMode::Open => Mode::Open,
        },
        thresholds: Thresholds {
            rate_limit_hits: c.captcha_rate_limit_hits,
            next_burst: c.captcha_next_burst,
            reports: c.captcha_reports,
            window: Duration::from_secs(c.captcha_window_secs),
        },
        pass_ttl: Duration::from_secs(c.captcha_pass_secs),
    })
}

pub async fn run(args: SignalingArgs) -> anyhow::Result<()> {
    let tracing_pipeline = observability::init_logging(
        &args.log,
        crate::telemetry::Service {
            role: "signaling",
            node_id: None,
            region: Some(args.region.clone()),
        },
    )?;
    let shutdown = shutdown::on_signal();
    let metrics = observability::registry("signaling")?;
    let require = |s: &Option<Secret>, flag: &str| {
        s.clone()
            .with_context(|| format!("{flag} is required for `duet signaling`"))
    };
    let shared = Shared {
        session_secret: require(&args.secrets.session_secret, "--session-secret")?,
        sfu_token_secret: require(&args.secrets.sfu_token_secret, "--sfu-token-secret")?,
        turn_secret: require(&args.secrets.turn_secret, "--turn-secret")?,
        internal_token: require(&args.secrets.internal_token, "--internal-token")?,
    };
    let http = serve::bind_tcp(args.http_listen, "--http-listen").await?;
    let http_addr = http.local_addr()?;
    let internal = match args.internal_listen {
        Some(addr) => Some(serve::bind_tcp(addr, "--internal-listen").await?),
        None => None,
    };
    let mut cfg = config(
        &args.matching,
        &args.abuse,
        shared,
        args.database_url.clone(),
        Some((args.redis_url.clone(), args.redis_prefix.clone())),
        args.region.clone(),
        args.region_fallbacks.clone(),
        format!("http://{http_addr}"),
    );
    cfg.trust_forwarded_for = args.trust_forwarded_for;
    cfg.screening_hold = args.hold.screen_hold_video == OnOff::On;
    cfg.http = args.http.limits();
    let state = signaling::build_state(cfg, &metrics)
        .await
        .context("cannot start signaling")?;
    let ready_state = state.clone();
    let ready: observability::ReadyCheck = Arc::new(move || {
        let s = ready_state.clone();
        Box::pin(async move { s.ready().await.map_err(|e| e.to_string()) })
    });
    let http_conf = serve::Http::with_metrics(&args.http, state.http_metrics());
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    let mut internal_addr = None;
    if let Some(listener) = internal {
        internal_addr = Some(listener.local_addr()?.to_string());
        let router = signaling::screening::internal_router(state.clone());
        handles.push(serve::spawn_http(
            listener,
            router,
            stop.clone(),
            "internal",
            &http_conf,
        ));
    }
    let router = signaling::app(state).merge(observability::health_router(metrics, ready));
    handles.push(serve::spawn_http(http, router, stop.clone(), "http", &http_conf));
    serve::print_ready(&serde_json::json!({ "http": http_addr.to_string(), "internal": internal_addr }));
    shutdown.cancelled().await;
    stop.cancel();
    serve::join_bounded(handles, serve::HTTP_GRACE + Duration::from_secs(1)).await;
    if let Some(t) = tracing_pipeline {
        t.shutdown().await;
    }
    Ok(())
}
