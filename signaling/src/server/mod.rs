//! The HTTP/1.1 listener every duet role serves its routers on.
//!
//! `axum::serve` has no header-read or idle timeout and no connection cap,
//! so a client could hold connections open with nothing or half a request
//! in them until the process ran out of file descriptors. Here:
//! - a request's headers must arrive within [`HttpLimits::header_timeout`],
//!   which is also how long an idle keep-alive connection stays open
//!   (hyper's `header_read_timeout` starts when it waits for a request head);
//! - a request must be answered (its body read included) within
//!   [`HttpLimits::request_timeout`], else 408;
//! - at most [`HttpLimits::max_connections`] connections (WebSockets
//!   included) are open at once; beyond that new ones are closed at once;
//! - every error answer is the documented JSON body: the routers' own
//!   ([`json_errors`]) and the parser's automatic 400/414/431
//!   ([`parse_errors`]).

mod json_errors;
mod parse_errors;

pub use json_errors::{error_code, json_errors};

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Limits of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must be complete this long after the connection
    /// (or the previous response) is ready for them; an idle keep-alive
    /// connection is closed after it too.
    pub header_timeout: Duration,
    /// From a request's headers to its response head (a slow upload of the
    /// body included): 408 after it. WebSockets and streamed answers are not
    /// cut (their response head is sent at once).
    pub request_timeout: Duration,
    /// Open connections (upgraded WebSockets included) at most.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// Connection metrics, labelled by listener name (a fixed set in code).
#[derive(Clone)]
pub struct HttpMetrics {
    /// label `listener`
    connections: IntGaugeVec,
    /// label `listener`: closed at once because `max_connections` were open.
    refused: IntCounterVec,
    /// labels `listener`, `kind` = header | request
    timeouts: IntCounterVec,
    /// labels `listener`, `kind` = bad_request (the parser's 400/414/431)
    bad_requests: IntCounterVec,
}

impl HttpMetrics {
    pub fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        let connections = IntGaugeVec::new(
            Opts::new(
                "duet_http_connections",
                "Open HTTP connections (WebSockets included)",
            ),
            &["listener"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "duet_http_connections_refused_total",
                "Connections closed at once because the listener's max_connections were open",
            ),
            &["listener"],
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new(
                "duet_http_timeouts_total",
                "Connections closed for sending no complete request head in time (kind=header) and requests answered 408 (kind=request)",
            ),
            &["listener", "kind"],
        )?;
        let bad_requests = IntCounterVec::new(
            Opts::new(
                "duet_http_malformed_requests_total",
                "Requests the HTTP parser refused (bad syntax, URI or headers too long)",
            ),
            &["listener"],
        )?;
        for c in [&refused, &bad_requests] {
            r.register(Box::new(c.clone()))?;
        }
        r.register(Box::new(connections.clone()))?;
        r.register(Box::new(timeouts.clone()))?;
        Ok(Self {
            connections,
            refused,
            timeouts,
            bad_requests,
        })
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets open requests
/// finish (the caller bounds how long it waits for that).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: HttpMetrics,
    name: &'static str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let timeouts_request = metrics.timeouts.with_label_values(&[name, "request"]);
    let router = router
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(
            move |resp: axum::response::Response| {
                let timeouts_request = timeouts_request.clone();
                async move {
                    if resp.status() == StatusCode::REQUEST_TIMEOUT {
                        timeouts_request.inc();
                    }
                    resp
                }
            },
        ))
        .layer(axum::middleware::from_fn(json_errors));
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let open = metrics.connections.with_label_values(&[name]);
    let refused = metrics.refused.with_label_values(&[name]);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, listener = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        open.inc();
        let io = parse_errors::JsonParseErrors::new(stream, permit, open.clone());
        let conn = Connection {
            router: router.clone(),
            peer,
            limits,
            metrics: metrics.clone(),
            name,
            shutdown: shutdown.clone(),
        };
        tokio::spawn(conn.run(io));
    }
    // Every connection holds a slot (an upgraded WebSocket until it closes):
    // all slots back means every connection has finished.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

/// One accepted connection.
struct Connection {
    router: Router,
    peer: SocketAddr,
    limits: HttpLimits,
    metrics: HttpMetrics,
    name: &'static str,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self, io: parse_errors::JsonParseErrors) {
        let peer = self.peer;
        let service =
            self.router
                .clone()
                .map_request(move |req: axum::http::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .keep_alive(true);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = self.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            self.count_error(&e);
        }
    }

    fn count_error(&self, e: &hyper::Error) {
        if e.is_timeout() {
            self.metrics
                .timeouts
                .with_label_values(&[self.name, "header"])
                .inc();
        } else if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
            self.metrics.bad_requests.with_label_values(&[self.name]).inc();
        }
        tracing::debug!(error = %e, peer = %self.peer, listener = self.name, "HTTP connection ended with an error");
    }
}
