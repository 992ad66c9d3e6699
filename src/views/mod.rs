//! What the daemon shows: Prometheus metrics, the JSON API and the status page, all read from
//! the builders' snapshots.

pub mod api;
pub mod counters;
pub mod live;
pub mod metrics;
pub mod page;
pub mod process;
mod series;
