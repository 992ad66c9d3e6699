//! The live status page at `/`: one self-contained HTML document (no external assets) that polls
//! the JSON API every second and redraws in place.

/// The page.
pub const HTML: &str = include_str!("page.html");
