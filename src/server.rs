//! The HTTP side: `/metrics` (or the configured path), the status page at `/`, the JSON API
//! under `/api/v1/`, and `/healthz`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::debug;

use crate::builder::Builder;
use crate::views::metrics::{encode, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::views::{api, page};

/// Longest time open connections get to finish after shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers read.
pub struct Views {
    /// Every metric the daemon exposes.
    pub registry: Registry,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// Every builder, for the JSON API.
    pub builders: Vec<Arc<Builder>>,
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
    const JSON: &str = "application/json";
    let path = request.uri().path();
    let (status, content_type, body) = if path == views.telemetry_path {
        (StatusCode::OK, METRICS_CONTENT_TYPE, Bytes::from(encode(&views.registry)))
    } else if path == "/healthz" {
        (StatusCode::OK, "text/plain; charset=utf-8", Bytes::from_static(b"ok\n"))
    } else if path == "/" {
        (
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from(page::HTML.replace("/metrics\"", &format!("{}\"", views.telemetry_path))),
        )
    } else if path == "/api/v1/builds" {
        (StatusCode::OK, JSON, Bytes::from(api::list(&views.builders, crate::now())))
    } else if let Some(reference) = path.strip_prefix("/api/v1/builds/") {
        match api::one(&views.builders, reference, crate::now()) {
            Some(body) => (StatusCode::OK, JSON, Bytes::from(body)),
            None => (StatusCode::NOT_FOUND, JSON, Bytes::from_static(b"{\"error\":\"no such build\"}")),
        }
    } else {
        (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Bytes::from_static(b"not found\n"))
    };
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .expect("static response")
}
