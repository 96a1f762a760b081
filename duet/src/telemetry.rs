//! Traces over OTLP/HTTP (protobuf), off unless an endpoint is given
//! (`--otlp-endpoint`, `DUET_OTLP_ENDPOINT`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! Only duet's own spans are exported (targets `signaling`, `sfu`,
//! `turn_relay`, `duet`), never log events: a span carries just the fields
//! its site names (ids, counts, outcomes), so no IP address or chat text can
//! leave through a log line that happens to run inside a span. The exporter
//! posts with the reqwest client duet already has, on the process's tokio
//! runtime (the batch processor's own thread only waits for it).

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::Layer;

/// Longest an export may take (connect, send, answer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest collector answer read (it is a small protobuf or JSON status).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What this process is, for the traces' resource attributes.
#[derive(Clone, Debug)]
pub struct Service {
    /// `signaling`, `sfu`, `turn`, `screen` or `up`.
    pub role: &'static str,
    pub node_id: Option<String>,
    pub region: Option<String>,
}

/// Tracing settings (from `LogArgs`).
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// Base URL of an OTLP/HTTP receiver (`/v1/traces` is appended).
    pub endpoint: Option<String>,
    /// Share of new traces kept (0.0-1.0); a visit's later spans follow its first.
    pub sampling_ratio: f64,
}

/// The traces URL for a base endpoint (a URL naming `/v1/traces` already is kept).
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim().trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The export pipeline; [`Tracing::shutdown`] sends what is left.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Flushes and stops the exporter (off the async threads: the flush waits
    /// for an export that runs on them).
    pub async fn shutdown(self) {
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export did not finish"),
            Err(e) => tracing::warn!(error = %e, "trace export shutdown stopped"),
        }
    }
}

/// A boxed subscriber layer.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// The layer exporting duet's spans, or `None` when tracing is off.
pub fn layer<S>(config: &TraceConfig, service: &Service) -> anyhow::Result<Option<(BoxedLayer<S>, Tracing)>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    let Some(endpoint) = config.endpoint.as_deref().filter(|e| !e.trim().is_empty()) else {
        return Ok(None);
    };
    if !(0.0..=1.0).contains(&config.sampling_ratio) {
        anyhow::bail!("--otlp-sampling-ratio must be between 0 and 1");
    }
    let url = traces_url(endpoint);
    url.parse::<reqwest::Url>()
        .with_context(|| format!("--otlp-endpoint: `{endpoint}` is not a URL"))?;
    let exporter = ByComponent {
        sfu: otlp(&url)?,
        other: otlp(&url)?,
        role: service.role,
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(resource(service))
        .build();
    let tracer = provider.tracer("duet");
    let only_ours = Targets::new()
        .with_target("signaling", tracing::Level::INFO)
        .with_target("sfu", tracing::Level::INFO)
        .with_target("turn_relay", tracing::Level::INFO)
        .with_target("duet", tracing::Level::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| m.is_span()))
        .with_filter(only_ours);
    Ok(Some((Box::new(layer), Tracing { provider })))
}

fn otlp(url: &str) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .context("OTLP HTTP client")?;
    let http = OtlpHttp {
        client,
        runtime: tokio::runtime::Handle::try_current().context("OTLP export needs the async runtime")?,
    };
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("OTLP exporter")
}

/// Resource attributes shared by every span of this process. The service
/// name is set per component by [`ByComponent`].
fn resource(service: &Service) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.namespace", "duet"),
        KeyValue::new("duet.role", service.role),
    ];
    if let Some(n) = &service.node_id {
        attrs.push(KeyValue::new("duet.node_id", n.clone()));
        attrs.push(KeyValue::new("service.instance.id", n.clone()));
    }
    if let Some(r) = &service.region {
        attrs.push(KeyValue::new("duet.region", r.clone()));
    }
    Resource::builder().with_attributes(attrs).build()
}

/// The service name a span is exported under: the role's, and in `duet up`
/// (all roles in one process) `duet-sfu` for the SFU's spans and
/// `duet-signaling` for the rest, so that it shows its parts as the
/// separate services they are in production.
fn service_name(role: &str, target: Option<&str>) -> &'static str {
    match role {
        "sfu" => "duet-sfu",
        "turn" => "duet-turn",
        "signaling" => "duet-signaling",
        _ => match target {
            Some(t) if t == "sfu" || t.starts_with("sfu::") => "duet-sfu",
            _ => "duet-signaling",
        },
    }
}

fn target_of(span: &SpanData) -> Option<&str> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == "target")
        .and_then(|kv| match &kv.value {
            opentelemetry::Value::String(s) => Some(s.as_str()),
            _ => None,
        })
}

/// Two OTLP exporters (the SFU's spans and everyone else's) that differ
/// only in their resource's service name.
#[derive(Debug)]
struct ByComponent {
    sfu: opentelemetry_otlp::SpanExporter,
    other: opentelemetry_otlp::SpanExporter,
    role: &'static str,
}

impl SpanExporter for ByComponent {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let (sfu, other): (Vec<SpanData>, Vec<SpanData>) = batch
            .into_iter()
            .partition(|s| service_name(self.role, target_of(s)) == "duet-sfu");
        let first = if sfu.is_empty() {
            Ok(())
        } else {
            self.sfu.export(sfu).await
        };
        let second = if other.is_empty() {
            Ok(())
        } else {
            self.other.export(other).await
        };
        first.and(second)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let a = self.sfu.shutdown_with_timeout(timeout);
        self.other.shutdown_with_timeout(timeout).and(a)
    }

    fn set_resource(&mut self, resource: &Resource) {
        let named = |name: &'static str| {
            // OTEL_SERVICE_NAME, when set, names every span of the process.
            let name = std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| name.to_owned());
            Resource::builder_empty()
                .with_attributes(resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
                .with_service_name(name)
                .build()
        };
        let other = match self.role {
            "turn" => "duet-turn",
            "sfu" => "duet-sfu",
            _ => "duet-signaling",
        };
        self.sfu.set_resource(&named("duet-sfu"));
        self.other.set_resource(&named(other));
    }
}

/// The OTLP exporter's HTTP client: duet's reqwest, run on the tokio
/// runtime (the batch processor calls from a thread of its own).
#[derive(Debug)]
struct OtlpHttp {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let client = self.client.clone();
        let answer = self.runtime.spawn(async move {
            let resp = client.execute(request).await?;
            let mut out = http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            let mut body = Vec::new();
            let mut resp = resp;
            while let Some(chunk) = resp.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, opentelemetry_http::HttpError>(out.body(bytes::Bytes::from(body))?)
        });
        answer.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otlp.example/v1/traces"),
            "https://otlp.example/v1/traces"
        );
    }

    #[test]
    fn up_exports_the_sfus_spans_as_their_own_service() {
        assert_eq!(service_name("up", Some("sfu::internal_api")), "duet-sfu");
        assert_eq!(service_name("up", Some("sfu")), "duet-sfu");
        assert_eq!(service_name("up", Some("signaling::api")), "duet-signaling");
        assert_eq!(service_name("up", Some("sfuzzy")), "duet-signaling");
        assert_eq!(service_name("up", None), "duet-signaling");
        assert_eq!(service_name("sfu", Some("signaling::server")), "duet-sfu");
        assert_eq!(service_name("signaling", Some("sfu::ws")), "duet-signaling");
    }
}
