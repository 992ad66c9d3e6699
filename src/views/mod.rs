//! What the daemon shows: Prometheus metrics, the JSON API and the status page, all read from
//! the builders' snapshots.

pub mod api;
pub mod counters;
pub mod live;
pub mod metrics;
pub mod page;
pub mod process;
mod series;

/// One builder named "default" and the exposition serving it, wired as the daemon wires them.
#[cfg(test)]
pub(crate) fn one_builder(
) -> (metrics::Exposition, std::sync::Arc<crate::fleet::Fleet>, std::sync::Arc<crate::builder::Builder>) {
    let registry = prometheus::Registry::new();
    let counters = counters::Counters::new(&registry, false);
    let fleet = crate::fleet::Fleet::new(crate::model::Settings::default(), counters.clone() as _);
    let builder = fleet.add("default", String::new()).expect("a new fleet has no builder");
    let exposition =
        metrics::Exposition::new(registry, counters, live::Live::new(fleet.clone(), None), prometheus::Registry::new());
    (exposition, fleet, builder)
}
