//! What flows out of the model: the [`Effect`]s that [`Model::apply`](super::Model::apply)
//! returns for counters and histograms to record.

use super::event::Time;
use super::snapshot::FinishedBuild;

/// A change that counters and histograms record.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A build was seen starting (or running, for the first time).
    BuildStarted,
    /// A running build's name became known, or its step list grew: the series its completion
    /// will count can exist at zero before then.
    BuildNamed {
        /// Its `name` label.
        name: String,
        /// The `instruction` of each of its steps, in order (repeats included).
        instructions: Vec<&'static str>,
    },
    /// A build finished and is counted.
    BuildFinished(FinishedBuild),
    /// A build from history: its completion time seeds the last-completion gauge only.
    HistorySeen {
        /// Its `name` label.
        name: String,
        /// Its `result` label.
        result: &'static str,
        /// When it completed.
        completed_at: Time,
    },
    /// A running build vanished from the source without a completion record (it is also
    /// finished, as failed).
    BuildLost {
        /// Its ref.
        reference: String,
    },
}
