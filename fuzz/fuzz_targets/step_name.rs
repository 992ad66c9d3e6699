//! Fuzzes vertex-name handling on its own: any text as a BuildKit vertex name through
//! `StepKind::parse` (the `[stage i/n] INSTRUCTION args` grammar, byte slicing around `[`, `]`
//! and `/`), and `truncate`, whose output becomes a label value: it must stay within 80
//! characters and on one line whatever the input.

#![no_main]

use buildkit_exporter::model::step::{truncate, StepKind};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 80;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let _ = StepKind::parse(&s).instruction();
    let cut = truncate(&s, MAX);
    assert!(cut.chars().count() <= MAX, "{} chars: {cut:?}", cut.chars().count());
    assert!(!cut.chars().any(char::is_control), "control character in {cut:?}");
});
