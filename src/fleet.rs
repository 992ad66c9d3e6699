//! The builders being watched, a set that changes while the daemon runs: the sources named at
//! startup stay, the container builders an engine runs come and go. The source layer adds and
//! removes builders; the views read the list as it is at each request.
//!
//! A builder removed here is gone from every view at once, and its series with it: a builder
//! that was deleted on purpose must not linger as a source that is down. Beside the builders,
//! the fleet holds what the sources file could not make into one.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::builder::{Builder, Record};
use crate::model::Settings;

/// The builders being watched.
pub struct Fleet {
    /// In the order they were added. A std lock: held only to copy or change the list.
    builders: RwLock<Vec<Arc<Builder>>>,
    /// What every builder's model is made with.
    settings: Settings,
    /// Where every builder's effects go.
    record: Arc<dyn Record>,
    /// The lines of the sources file that are not watched, and why; `None` without a file.
    file_errors: RwLock<Option<Vec<String>>>,
}

impl Fleet {
    /// An empty fleet whose builders are made with `settings` and record into `record`.
    pub fn new(settings: Settings, record: Arc<dyn Record>) -> Arc<Fleet> {
        Arc::new(Fleet { builders: RwLock::default(), settings, record, file_errors: RwLock::default() })
    }

    /// Adds a builder named `name`, reached at `address`; `None` when the name is taken (two
    /// builders sharing a `builder` label would mix their series).
    pub fn add(&self, name: &str, address: String) -> Option<Arc<Builder>> {
        let mut builders = self.write();
        if builders.iter().any(|b| b.name == name) {
            return None;
        }
        let builder = Builder::new(name, self.settings.clone(), self.record.clone());
        builder.set_address(address);
        builders.push(builder.clone());
        Some(builder)
    }

    /// Removes builder `name` and its series. A source still running may write some back:
    /// [`Fleet::forget`] them once it stopped.
    pub fn remove(&self, name: &str) {
        let mut builders = self.write();
        let before = builders.len();
        builders.retain(|b| b.name != name);
        if builders.len() != before {
            self.record.builder_removed(name);
        }
    }

    /// Forgets the series of builder `name` once more, unless it is in the fleet: for a builder
    /// removed while its source still ran, once that source has stopped.
    pub fn forget(&self, name: &str) {
        if !self.read().iter().any(|b| b.name == name) {
            self.record.builder_removed(name);
        }
    }

    /// The builders as they are now.
    pub fn builders(&self) -> Vec<Arc<Builder>> {
        self.read().clone()
    }

    /// Records the sources file's bad lines, as last read.
    pub fn set_file_errors(&self, errors: Vec<String>) {
        *self.file_errors.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(errors);
    }

    /// The sources file's bad lines, as last read; `None` without a file (or before it is read).
    pub fn file_errors(&self) -> Option<Vec<String>> {
        self.file_errors.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Arc<Builder>>> {
        // A panic while the list was held cannot leave it half-changed: push and retain are
        // whole before the guard drops.
        self.builders.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<Arc<Builder>>> {
        self.builders.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::Effect;

    /// Which builders were added and removed, in order.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Record for Log {
        fn builder_added(&self, builder: &str) {
            self.0.lock().unwrap().push(format!("+{builder}"));
        }
        fn builder_removed(&self, builder: &str) {
            self.0.lock().unwrap().push(format!("-{builder}"));
        }
        fn record(&self, _: &str, _: &Effect) {}
        fn reconnect(&self, _: &str) {}
        fn restart(&self, _: &str) {}
    }

    #[test]
    fn a_name_is_taken_once_and_a_removed_builder_leaves_the_list_and_its_series() {
        let log = Arc::new(Log::default());
        let fleet = Fleet::new(Settings::default(), log.clone());
        fleet.add("default", "unix:///a.sock".into()).unwrap();
        let ci = fleet.add("default/ci", "docker-container://buildx_buildkit_ci0".into()).unwrap();
        assert!(fleet.add("default/ci", "elsewhere".into()).is_none(), "a taken name is refused");
        assert_eq!(ci.facts().address, "docker-container://buildx_buildkit_ci0");
        fleet.remove("default/ci");
        fleet.remove("default/ci");
        fleet.remove("never-added");
        // Once its source stopped: forgotten again, unless a builder of that name is watched.
        fleet.forget("default/ci");
        fleet.forget("default");
        let names: Vec<String> = fleet.builders().iter().map(|b| b.name.clone()).collect();
        assert_eq!(names, ["default"]);
        assert_eq!(*log.0.lock().unwrap(), ["+default", "+default/ci", "-default/ci", "-default/ci"]);
    }
}
