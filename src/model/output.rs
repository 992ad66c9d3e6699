//! The last lines a step printed: what it is doing now ("Unpacking packages…"). Kept only when
//! `--build.output-lines` asks for them, masked like all build text, bounded per step.
//!
//! Only whole lines are kept. A build prints in chunks that cut lines (and build-arg values)
//! anywhere; a line is masked and kept once its end (`\n`, or the `\r` of a progress bar) has
//! arrived, so the first half of a value never shows before the mask could see the whole.

use std::collections::VecDeque;

use super::mask::Mask;

/// Longest line kept, in characters; the rest is cut.
const MAX_LINE_CHARS: usize = 200;
/// Longest unfinished line held while waiting for its end; beyond it the line is dropped.
const MAX_PENDING_BYTES: usize = 4096;

/// The tail of one step's output.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    /// Whole lines, masked, oldest first.
    lines: VecDeque<String>,
    /// The line being printed, not yet ended; never shown.
    pending: String,
    /// The pending line outgrew [`MAX_PENDING_BYTES`]: skip to its end.
    skipping: bool,
}

impl Tail {
    /// Adds a chunk of output, keeping the last `keep` whole lines.
    pub fn push(&mut self, chunk: &str, keep: usize, mask: &Mask) {
        let mut rest = chunk;
        while let Some(end) = rest.find(['\n', '\r']) {
            let (piece, after) = rest.split_at(end);
            if !self.skipping {
                self.pending.push_str(piece);
            }
            self.end_line(keep, mask);
            rest = &after[1..];
        }
        if !self.skipping {
            self.pending.push_str(rest);
            if self.pending.len() > MAX_PENDING_BYTES {
                self.pending.clear();
                self.skipping = true;
            }
        }
    }

    fn end_line(&mut self, keep: usize, mask: &Mask) {
        self.skipping = false;
        let line = std::mem::take(&mut self.pending);
        let line = line.trim_end();
        if line.trim().is_empty() {
            return;
        }
        let masked = mask.apply(line);
        let mut kept: String = masked.chars().take(MAX_LINE_CHARS).collect();
        if masked.chars().nth(MAX_LINE_CHARS).is_some() {
            kept.push('…');
        }
        self.lines.push_back(kept);
        while self.lines.len() > keep {
            self.lines.pop_front();
        }
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(chunks: &[&str], keep: usize, secrets: &[&str]) -> Vec<String> {
        let mask = Mask::new(&secrets.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut tail = Tail::default();
        for chunk in chunks {
            tail.push(chunk, keep, &mask);
        }
        tail.lines()
    }

    #[test]
    fn whole_lines_only_the_last_ones() {
        assert_eq!(tail(&["one\ntwo\nthr", "ee\nfou"], 2, &[]), vec!["two", "three"]);
        // A progress bar redraws its line with \r: each state is a line.
        assert_eq!(tail(&["10%\r50%\r", "100%\n"], 5, &[]), vec!["10%", "50%", "100%"]);
        assert_eq!(tail(&["\n\n  \n"], 5, &[]), Vec::<String>::new());
    }

    #[test]
    fn a_value_cut_across_chunks_never_shows_in_part() {
        let chunks = ["token hunter2-", "tok", "en ok\n"];
        let mask = Mask::new(&["hunter2-token".to_string()]);
        let mut t = Tail::default();
        for chunk in chunks {
            t.push(chunk, 3, &mask);
            for line in t.lines() {
                assert!(!line.contains("hunter2"), "{line}");
            }
        }
        assert_eq!(t.lines(), vec!["token *** ok"]);
    }

    #[test]
    fn long_lines_are_cut_and_endless_ones_dropped() {
        let long = "x".repeat(500) + "\n";
        assert_eq!(tail(&[&long], 1, &[])[0].chars().count(), MAX_LINE_CHARS + 1);
        let endless = "y".repeat(MAX_PENDING_BYTES + 1);
        assert_eq!(tail(&[&endless, "tail\nnext\n"], 5, &[]), vec!["next"]);
    }
}
