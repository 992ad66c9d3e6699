//! The HTTP side: `/metrics` (or the configured path), the status page at `/`, the JSON API
//! under `/api/v1/`, and `/healthz` — over TLS and behind basic auth when the web configuration
//! file asks for them, and guarded so that stalled or hostile clients cannot keep Prometheus
//! out: every connection must finish its TLS handshake and send each request's headers within
//! `--web.header-timeout`, and at most `--web.max-connections` are held, the one waiting longest
//! for a request giving way to a newcomer.
//!
//! A connection goes through one file per stage:
//!
//! - [`listen`] binds (a bare port on IPv6 and IPv4 alike) and runs each listener's accept loop;
//! - [`slots`] is the table of open connections that `--web.max-connections` bounds;
//! - [`connection`] is one connection: TLS sniffing and handshake, then hyper's HTTP/1.1;
//! - [`guard`] is one request's way through: basic auth, then the route, then the headers every
//!   response carries;
//! - [`route`] picks the view that answers: a plain function of the [`Views`] and the request;
//! - [`encoding`] negotiates gzip and compresses.

mod connection;
mod encoding;
mod guard;
mod listen;
mod route;
mod slots;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::warn;

use crate::config::Web;
use crate::web::auth::Gate;

pub use listen::bind;
pub use route::Views;

/// What every connection shares.
struct Shared {
    views: Arc<Views>,
    web: Web,
    gate: Gate,
    slots: Arc<slots::Slots>,
}

/// Serves `listeners` until `shutdown` turns true, then lets open connections finish.
pub async fn serve(listeners: Vec<TcpListener>, views: Arc<Views>, web: Web, shutdown: watch::Receiver<bool>) {
    if let Some(file) = &web.config_file {
        let config = file.current();
        if !config.users.is_empty() && config.tls.is_none() {
            warn!(file = %file.path().display(), "basic auth without TLS: passwords cross the network in clear text");
        }
    }
    let slots = slots::Slots::new(web.max_connections);
    let shared = Arc::new(Shared { views, web, gate: Gate::default(), slots });
    let mut loops = JoinSet::new();
    for listener in listeners {
        loops.spawn(listen::accept(listener, shared.clone(), shutdown.clone()));
    }
    while loops.join_next().await.is_some() {}
}
