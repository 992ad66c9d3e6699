//! The process behind a unix-socket or container-builder source, and what it says when the
//! source answers again.
//!
//! A source that comes back after a failure either restarted (an engine or a buildkitd that was
//! stopped, upgraded, or killed) or only lost its link. From the protocol they look the same.
//! Over a unix socket the kernel names the peer process (`SO_PEERCRED`); with its start time
//! (PIDs are reused, a PID with its start time is not) that settles which it was. A peer in
//! another PID namespace is not visible (the kernel reports PID 0), nor is the process behind a
//! TCP source: then nothing is said. A container builder's engine names its container's process
//! and when it started, which serves the same way.

use tokio::net::UnixStream;

/// A process: its PID and its start time, which together never name two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    /// Clock ticks after boot (`/proc/PID/stat`, field 22), or for a container, a hash of the
    /// time the engine says it started.
    started: u64,
}

impl Peer {
    /// The process at the other end of `stream`, if this daemon can see it.
    pub fn of(stream: &UnixStream) -> Option<Peer> {
        let pid = stream.peer_cred().ok()?.pid()?;
        if pid <= 0 {
            return None;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(Peer { pid, started: start_time(&stat)? })
    }
}

impl Peer {
    /// The main process of a container, as the engine reports it: its host PID and the
    /// container's start time (`State.StartedAt`), which changes at every start.
    pub fn container(pid: i32, started_at: &str) -> Peer {
        use std::hash::{Hash, Hasher};
        // Only compared for equality, within this process: any stable hash of the text will do.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        started_at.hash(&mut hasher);
        Peer { pid, started: hasher.finish() }
    }
}

/// The start time in a `/proc/PID/stat` line. The command name (field 2) is in parentheses and
/// may hold spaces and parentheses itself, so fields are counted from the last `)`.
fn start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (the state) is the first after the name; field 22 is the 20th.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// What a new connection's peer says of the source's last failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comeback {
    /// The first connection, or a peer that cannot be seen now or could not be before.
    Unknown,
    /// The same process answers: the link broke, the source did not restart.
    SameProcess,
    /// Another process answers: the source restarted.
    Restarted { before: Peer, now: Peer },
}

/// The peer of the last connection to one source.
#[derive(Debug, Default)]
pub struct Peers {
    last: Option<Peer>,
}

impl Peers {
    /// Records the peer of a new connection and says what it tells.
    pub fn connected(&mut self, now: Option<Peer>) -> Comeback {
        let comeback = match (self.last, now) {
            (Some(before), Some(now)) if before == now => Comeback::SameProcess,
            (Some(before), Some(now)) => Comeback::Restarted { before, now },
            _ => Comeback::Unknown,
        };
        if now.is_some() {
            self.last = now;
        }
        comeback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (buildkitd (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 12 0 987654 123456 789";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(start_time("4242 (cut short) S 1 2"), None);
    }

    #[tokio::test]
    async fn the_peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = Peer::of(&a).expect("this process can see itself");
        assert_eq!(peer.pid, std::process::id() as i32);
        assert_eq!(Peer::of(&a), Some(peer), "the same process, asked twice");
    }

    #[test]
    fn another_process_is_a_restart_and_the_same_one_a_broken_link() {
        let (one, two) = (Peer { pid: 10, started: 100 }, Peer { pid: 11, started: 200 });
        let reused = Peer { pid: 10, started: 300 };
        let mut peers = Peers::default();
        assert_eq!(peers.connected(Some(one)), Comeback::Unknown, "the first connection");
        assert_eq!(peers.connected(Some(one)), Comeback::SameProcess);
        assert_eq!(peers.connected(Some(two)), Comeback::Restarted { before: one, now: two });
        assert_eq!(peers.connected(Some(reused)), Comeback::Restarted { before: two, now: reused });
        assert_eq!(peers.connected(Some(reused)), Comeback::SameProcess);
        // A peer not seen says nothing, and is not taken for the last one.
        assert_eq!(peers.connected(None), Comeback::Unknown);
        assert_eq!(peers.connected(Some(one)), Comeback::Restarted { before: reused, now: one });
    }
}
