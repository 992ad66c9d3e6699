//! What BuildKit says of itself and holds, read in the background every
//! `--source.usage-interval` while the source is connected: its version (`Info`), its workers
//! and their platforms (`ListWorkers`) and its build cache (`DiskUsage`). Never on the scrape
//! path: `DiskUsage` walks every cache record. All three are read-only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::{DiskUsageRequest, InfoRequest, ListWorkersRequest, UsageRecord};
use bollard_buildkit_proto::pb::Platform;
use tonic::transport::Channel;
use tracing::debug;

use crate::builder::Builder;
use crate::facts::{cache_type, Buildkit, Cache, Worker, CACHE_TYPES};

/// Reads every `every` until the task is dropped (with its connection). An answer that fails
/// keeps the last one read: a slow `DiskUsage` does not blank the cache series.
pub async fn refresh(mut client: ControlClient<Channel>, builder: Arc<Builder>, every: Duration, timeout: Duration) {
    let mut last = Buildkit::default();
    loop {
        last = read(&mut client, timeout, last).await;
        builder.set_buildkit(last.clone());
        tokio::time::sleep(every).await;
    }
}

async fn read(client: &mut ControlClient<Channel>, timeout: Duration, last: Buildkit) -> Buildkit {
    let version = match tokio::time::timeout(timeout, client.info(InfoRequest {})).await {
        Ok(Ok(answer)) => answer.into_inner().buildkit_version.map(|v| v.version).unwrap_or_default(),
        failed => {
            debug!(?failed, "Info");
            last.version
        }
    };
    let workers = match tokio::time::timeout(timeout, client.list_workers(ListWorkersRequest::default())).await {
        Ok(Ok(answer)) => answer
            .into_inner()
            .record
            .into_iter()
            .map(|w| Worker { id: w.id, platforms: w.platforms.iter().map(platform).collect() })
            .collect(),
        failed => {
            debug!(?failed, "ListWorkers");
            last.workers
        }
    };
    let cache = match tokio::time::timeout(timeout, client.disk_usage(DiskUsageRequest::default())).await {
        Ok(Ok(answer)) => Some(cache(&answer.into_inner().record)),
        failed => {
            debug!(?failed, "DiskUsage");
            last.cache
        }
    };
    Buildkit { version, workers, cache, refreshed_at: crate::clock::now() }
}

/// `os/arch[/variant]`, as Docker writes platforms.
fn platform(p: &Platform) -> String {
    let mut text = format!("{}/{}", p.os, p.architecture);
    if !p.variant.is_empty() {
        text.push('/');
        text.push_str(&p.variant);
    }
    text
}

/// Sizes by record type and what a prune could free, as `docker buildx du` adds them up.
fn cache(records: &[UsageRecord]) -> Cache {
    let mut by_type: BTreeMap<&'static str, u64> = CACHE_TYPES.iter().map(|t| (*t, 0)).collect();
    let mut reclaimable = 0;
    for record in records {
        let size = u64::try_from(record.size).unwrap_or(0);
        *by_type.entry(cache_type(&record.record_type)).or_default() += size;
        if !record.in_use {
            reclaimable += size;
        }
    }
    Cache { by_type, reclaimable, records: records.len() as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_adds_up_by_type_and_bounds_the_types() {
        let record = |kind: &str, size: i64, in_use: bool| UsageRecord {
            record_type: kind.into(),
            size,
            in_use,
            ..UsageRecord::default()
        };
        let cache = cache(&[
            record("regular", 100, false),
            record("regular", 50, true),
            record("exec.cachemount", 30, false),
            record("something.new", 7, false),
        ]);
        let size = |t: &str| cache.by_type[t];
        assert_eq!((size("regular"), size("exec.cachemount"), size("other")), (150, 30, 7));
        assert_eq!(cache.by_type.len(), CACHE_TYPES.len());
        assert_eq!((cache.reclaimable, cache.records), (137, 4));
    }
}
