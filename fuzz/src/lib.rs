//! What the fuzz targets share.
//!
//! The targets drive `buildkit_exporter::source::convert`, but that module is private to the
//! crate (`mod convert;` in `src/source/mod.rs`). Until it is exported, the same source file is
//! compiled here against the crate's public `model`, which is all it uses, so the targets fuzz
//! the code the exporter runs. Once `convert` is public, replace the two items below with
//! `pub use buildkit_exporter::source::convert;`.

/// What `convert.rs` reaches as `crate::model`.
mod model {
    pub use buildkit_exporter::model::*;
}

/// `src/source/convert.rs`, as the exporter compiles it.
#[path = "../../src/source/convert.rs"]
pub mod convert;

/// The image-name label the exporter reads by default.
pub const NAME_LABEL: &str = "org.opencontainers.image.title";
