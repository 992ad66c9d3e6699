//! The HTTP side: `/metrics` (or the configured path), `/healthz` and a landing page at `/`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, ALLOW};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::debug;

use crate::metrics::{encode, CONTENT_TYPE as METRICS_CONTENT_TYPE};

/// Longest time open connections get to finish after shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers read.
pub struct Views {
    /// Every metric the daemon exposes.
    pub registry: Registry,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
}

/// Serves `listener` until `shutdown` turns true, then lets open connections finish.
pub async fn serve(listener: TcpListener, views: Arc<Views>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => break,
        };
        let views = views.clone();
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let views = views.clone();
                async move { Ok::<_, Infallible>(handle(&views, request)) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let stopping = tokio::select! {
                _ = connection.as_mut() => false,
                _ = crate::stopped(&mut stop) => true,
            };
            if stopping {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
}

fn handle(views: &Views, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(ALLOW, "GET, HEAD")
            .body(Full::new(Bytes::from_static(b"method not allowed\n")))
            .expect("static response");
    }
    let path = request.uri().path();
    let (status, content_type, body) = if path == views.telemetry_path {
        (StatusCode::OK, METRICS_CONTENT_TYPE, Bytes::from(encode(&views.registry)))
    } else if path == "/healthz" {
        (StatusCode::OK, "text/plain; charset=utf-8", Bytes::from_static(b"ok\n"))
    } else if path == "/" {
        (StatusCode::OK, "text/html; charset=utf-8", Bytes::from(landing_page(&views.telemetry_path)))
    } else {
        (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Bytes::from_static(b"not found\n"))
    };
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .expect("static response")
}

fn landing_page(telemetry_path: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>buildkit-exporter</title></head>\n\
         <body><h1>buildkit-exporter {}</h1>\n<p>Prometheus exporter for BuildKit image builds.</p>\n\
         <ul><li><a href=\"{telemetry_path}\">Metrics</a></li><li><a href=\"/healthz\">Health</a></li></ul>\n</body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}
