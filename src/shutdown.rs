//! Shutdown: one `watch` channel whose value turns true once; every long-lived task (the
//! listeners, each connection, each source) ends when [`stopped`] resolves.

use tokio::sync::watch;

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
