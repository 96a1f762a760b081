//! `duet screen`: a screener. It scales on its own (several screeners share
//! the work through signaling's claims) and runs in-process in `duet up`
//! when a model is given.

use super::serve;
use crate::cli::{ScreenArgs, ScreeningArgs};
use crate::observability;
use crate::shutdown;
use anyhow::Context;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A loaded model, its metrics and the loop settings: everything but where
/// signaling is.
pub struct Screening {
    model: screen::Model,
    metrics: screen::Metrics,
    args: ScreeningArgs,
}

/// Loads and checks the model (`None` when no model is given; a model
/// without its config, a bad config or a model that does not fit it is an
/// error at start-up, not at the first call).
pub fn load(args: &ScreeningArgs, registry: &prometheus::Registry) -> anyhow::Result<Option<Screening>> {
    let (model_path, config_path) = match (&args.screen_model, &args.screen_model_config) {
        (None, None) => return Ok(None),
        (Some(m), Some(c)) => (m, c),
        _ => anyhow::bail!("--screen-model and --screen-model-config go together"),
    };
    let config = screen::ModelConfig::load(config_path).context("--screen-model-config")?;
    let categories: Vec<String> = config.categories.iter().map(|c| c.name.clone()).collect();
    let model = screen::Model::load(model_path, config).context("--screen-model")?;
    let metrics = screen::Metrics::new(registry, &categories).context("screening metrics")?;
    tracing::info!(model = model.id(), path = %model_path.display(), "screening model loaded");
    Ok(Some(Screening {
        model,
        metrics,
        args: args.clone(),
    }))
}

impl Screening {
    /// Starts screening against signaling's internal API at `signaling_url`.
    pub fn spawn(
        self,
        screener_id: String,
        signaling_url: String,
        internal_token: String,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let a = &self.args;
        let workers = match a.screen_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let config = screen::ScreenerConfig {
            screener_id,
            signaling_url,
            internal_token,
            schedule: screen::ScheduleConfig {
                period_ms: a.screen_every_secs * 1000,
                first_after_ms: a.screen_first_after_ms,
            },
            list_every: Duration::from_millis(a.screen_list_ms),
            workers,
            queue: a.screen_queue as usize,
            http_timeout: Duration::from_secs(5),
        };
        tokio::spawn(async move {
            if let Err(e) = screen::run(config, self.model, self.metrics, stop).await {
                tracing::error!(error = %e, "screening stopped");
            }
        })
    }
}

pub async fn run(args: ScreenArgs) -> anyhow::Result<()> {
    let tracing_pipeline = observability::init_logging(
        &args.log,
        crate::telemetry::Service {
            role: "screen",
            node_id: None,
            region: None,
        },
    )?;
    let shutdown = shutdown::on_signal();
    let metrics = observability::registry("screen")?;
    let screening = load(&args.screening, &metrics)?
        .context("--screen-model and --screen-model-config are required for `duet screen`")?;
    let http = serve::bind_tcp(args.metrics_listen, "--metrics-listen").await?;
    let http_addr = http.local_addr()?;
    let screener_id = args
        .screener_id
        .clone()
        .unwrap_or_else(|| format!("screen-{:08x}", rand::random::<u32>()));
    let id_ok = !screener_id.is_empty()
        && screener_id.len() <= 64
        && screener_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if !id_ok {
        anyhow::bail!("--screener-id must be 1-64 characters of A-Z a-z 0-9 _ - . :");
    }
    let stop = CancellationToken::new();
    let mut handles = vec![screening.spawn(
        screener_id,
        args.signaling_internal_url.clone(),
        args.internal_token.expose().to_owned(),
        stop.clone(),
    )];
    let http_conf = serve::Http {
        limits: signaling::server::HttpLimits::default(),
        metrics: signaling::server::HttpMetrics::new(&metrics).context("HTTP metrics")?,
    };
    handles.push(serve::spawn_http(
        http,
        observability::health_router(metrics, observability::always_ready()),
        stop.clone(),
        "metrics",
        &http_conf,
    ));
    serve::print_ready(&serde_json::json!({ "metrics": http_addr.to_string() }));
    shutdown.cancelled().await;
    stop.cancel();
    serve::join_bounded(handles, Duration::from_secs(10)).await;
    if let Some(t) = tracing_pipeline {
        t.shutdown().await;
    }
    Ok(())
}
