//! The metrics listener: `GET /metrics`, `/healthz` and `/readyz` over HTTP/1.1 (hyper),
//! on a thread and runtime of its own so that a scrape never takes time from clients.
//!
//! Bounded like the protocol port: at most [`CONNECTIONS_MAX`] scrapers at once (more
//! wait in the kernel's backlog), and a request's head must arrive within
//! [`HEADER_READ_TIMEOUT`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use super::MetricsError;

const CONNECTIONS_MAX: usize = 64;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one scraper's connection: one that stops reading its response must
/// not hold a permit for ever.
const CONNECTION_LIFETIME_MAX: Duration = Duration::from_secs(60);
/// How often histograms are compacted and `settled_ready` refreshed.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

type Probe = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Default)]
enum State {
    #[default]
    Starting,
    Serving(Probe),
    Stopping,
}

/// Whether the daemon is ready for traffic, as `/readyz` reports it: not while the engine
/// recovers, then whatever the engine's probe says, not once shutdown began.
#[derive(Clone, Default)]
pub struct Readiness {
    state: Arc<Mutex<State>>,
}

impl Readiness {
    /// The engine is open: from now on `probe` decides.
    pub fn serving(&self, probe: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        *self.lock() = State::Serving(Box::new(probe));
    }

    /// Shutdown began: load balancers should stop sending traffic.
    pub fn stopping(&self) {
        *self.lock() = State::Stopping;
    }

    /// `Ok` when ready, else a one-line reason.
    pub fn check(&self) -> Result<(), String> {
        match &*self.lock() {
            State::Starting => Err("recovering: the engine is not open yet".into()),
            State::Serving(probe) => probe(),
            State::Stopping => Err("shutting down".into()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bind `addr` now (so a taken port fails the start) and serve from a thread of its own.
pub fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    readiness: Readiness,
) -> Result<(), MetricsError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(MetricsError::Runtime)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MetricsError::Runtime)?;
    // Registered with the runtime here, so that a failure stops the start.
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(MetricsError::Runtime)?
    };
    std::thread::Builder::new()
        .name("settled-metrics".into())
        .spawn(move || runtime.block_on(run(listener, handle, readiness)))
        .map_err(MetricsError::Runtime)?;
    Ok(())
}

async fn run(listener: tokio::net::TcpListener, handle: PrometheusHandle, readiness: Readiness) {
    tokio::spawn(upkeep(handle.clone(), readiness.clone()));
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors and the like: pass, the next accept may work.
                tracing::warn!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (handle, readiness) = (handle.clone(), readiness.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &handle, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME_MAX, connection).await;
            drop(permit);
        });
    }
}

async fn upkeep(handle: PrometheusHandle, readiness: Readiness) {
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        interval.tick().await;
        handle.run_upkeep();
        let ready = readiness.check().is_ok();
        metrics::gauge!(super::READY).set(if ready { 1.0 } else { 0.0 });
    }
}

fn respond(
    request: &Request<Incoming>,
    handle: &PrometheusHandle,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, handle.render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", reason.replace('\n', " ")),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_daemon_through_its_life() {
        let readiness = Readiness::default();
        assert!(readiness.check().unwrap_err().starts_with("recovering"));
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let probe = healthy.clone();
        readiness.serving(move || {
            if probe.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(())
            } else {
                Err("WAL failed".into())
            }
        });
        assert_eq!(readiness.check(), Ok(()));
        healthy.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(readiness.check(), Err("WAL failed".into()));
        readiness.stopping();
        assert_eq!(readiness.check(), Err("shutting down".into()));
    }
}
