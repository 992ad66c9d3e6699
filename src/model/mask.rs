//! Masking build-arg values out of build text (step names, errors, tags) before it is kept.
//!
//! Every occurrence of every value is found at once, overlapping ones included, and the union of
//! what they cover is replaced: so the result does not depend on the order the values arrive in,
//! and a value nested in or overlapping another leaks no part of either.

use std::borrow::Cow;

use aho_corasick::AhoCorasick;

/// Shortest build-arg value that is masked; shorter values would garble commands while
/// protecting nothing.
pub const MIN_MASKED_LEN: usize = 3;
/// What a masked stretch of text is replaced with.
pub const MASK: &str = "***";

/// Up to this many values are searched one by one; more get an automaton. Building one costs
/// about 10 µs, a quarter of all the work a typical build makes, and most builds have a few
/// build-args.
const FEW_VALUES: usize = 8;

/// A keyed hash of a build-arg value: values of two builds can be compared without either being
/// kept. The key is drawn at random once per process and never leaves it, so a hash cannot be
/// checked against guessed values outside.
pub fn fingerprint(value: &str) -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(std::collections::hash_map::RandomState::new).hash_one(value)
}

/// The build-arg values of one build, ready to mask text.
#[derive(Debug, Clone, Default)]
pub struct Mask {
    matcher: Matcher,
}

#[derive(Debug, Clone, Default)]
enum Matcher {
    /// No value is long enough to mask.
    #[default]
    Nothing,
    /// A few values, searched one by one.
    Few(Vec<String>),
    /// Many, searched at once.
    Many(AhoCorasick),
}

impl Mask {
    /// A mask for `values`; those shorter than [`MIN_MASKED_LEN`] are ignored.
    pub fn new(values: &[String]) -> Mask {
        let values: Vec<&str> = values.iter().map(String::as_str).filter(|v| v.len() >= MIN_MASKED_LEN).collect();
        let matcher = match values.len() {
            0 => Matcher::Nothing,
            n if n <= FEW_VALUES => Matcher::Few(values.into_iter().map(str::to_string).collect()),
            _ => Matcher::Many(AhoCorasick::new(values).expect("plain strings always build an automaton")),
        };
        Mask { matcher }
    }

    /// `text` with every stretch covered by a value replaced by [`MASK`].
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut found: Vec<(usize, usize)> = match &self.matcher {
            Matcher::Nothing => return Cow::Borrowed(text),
            Matcher::Few(values) => values.iter().flat_map(|value| overlapping(text, value)).collect(),
            Matcher::Many(matcher) => matcher.find_overlapping_iter(text).map(|m| (m.start(), m.end())).collect(),
        };
        // Matches come ordered by value or by where they end: sort by start to merge them.
        found.sort_unstable();
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for (start, end) in found {
            match covered.last_mut() {
                Some((_, last_end)) if start <= *last_end => *last_end = (*last_end).max(end),
                _ => covered.push((start, end)),
            }
        }
        if covered.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut masked = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in covered {
            masked.push_str(&text[at..start]);
            masked.push_str(MASK);
            at = end;
        }
        masked.push_str(&text[at..]);
        Cow::Owned(masked)
    }
}

/// Every occurrence of `value` in `text`, overlapping ones included (`aa` in `aaa` twice).
fn overlapping<'a>(text: &'a str, value: &'a str) -> impl Iterator<Item = (usize, usize)> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        let start = from + text.get(from..)?.find(value)?;
        // The next search starts one character in: a value may overlap itself.
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        Some((start, start + value.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(values: &[&str], text: &str) -> String {
        Mask::new(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>()).apply(text).into_owned()
    }

    #[test]
    fn values_are_masked_wherever_they_appear() {
        assert_eq!(mask(&["s3cr3t"], "echo s3cr3t && echo s3cr3t"), "echo *** && echo ***");
        assert_eq!(mask(&["ab"], "echo ab"), "echo ab", "too short to mask");
        assert_eq!(mask(&[], "echo x"), "echo x");
    }

    #[test]
    fn nested_values_mask_the_longest_whatever_the_order() {
        for values in [["bob", "bob-secret"], ["bob-secret", "bob"]] {
            assert_eq!(mask(&values, "login bob:bob-secret"), "login ***:***");
        }
    }

    #[test]
    fn overlapping_values_leak_no_part_of_either() {
        assert_eq!(mask(&["abcd", "cdef"], "x abcdef y"), "x *** y");
    }

    #[test]
    fn a_value_overlapping_itself_is_masked_whole() {
        assert_eq!(mask(&["aba"], "x ababa y"), "x *** y");
        assert_eq!(mask(&["ééé"], "éééé"), "***");
    }

    proptest::proptest! {
        /// Values nested in and overlapping each other, in any order, over text made of their
        /// pieces: no value survives masking. (Values are drawn without the mask character: one
        /// made of it could only ever reappear as part of a mask.)
        #[test]
        fn no_value_survives(
            values in proptest::collection::vec("[ab-]{3,8}", 1..5),
            pieces in proptest::collection::vec((0usize..5, 0usize..8, 0usize..8, "[ab -]{0,3}"), 0..12),
        ) {
            let mut text = String::new();
            for (which, from, to, filler) in &pieces {
                let value = &values[which % values.len()];
                let (from, to) = (from.min(&value.len()).to_owned(), to.min(&value.len()).to_owned());
                text.push_str(&value[from.min(to)..]);
                text.push_str(filler);
                text.push_str(value);
            }
            let masked = Mask::new(&values).apply(&text).into_owned();
            for value in &values {
                proptest::prop_assert!(!masked.contains(value.as_str()), "{value:?} in {masked:?} (from {text:?})");
            }
            let mut reversed = values.clone();
            reversed.reverse();
            proptest::prop_assert_eq!(Mask::new(&reversed).apply(&text).into_owned(), masked.clone(), "order of the values");
            // The one-by-one search and the automaton mask alike.
            let automaton = Mask { matcher: Matcher::Many(AhoCorasick::new(&values).unwrap()) };
            proptest::prop_assert_eq!(automaton.apply(&text).into_owned(), masked, "search and automaton");
        }
    }
}
