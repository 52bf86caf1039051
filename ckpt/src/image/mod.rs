//! Image format (format.rs), the streaming writer and the validating reader.

pub mod format;
mod reader;
mod writer;

pub use format::*;
pub use reader::{ImageError, ImageFile};
pub use writer::{layout, region_hash, ImageWriter};
