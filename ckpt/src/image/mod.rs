//! Image format (format.rs), the streaming writer and the validating reader.

pub mod format;
pub mod lanes;
pub mod live;
mod reader;
mod writer;

pub use format::*;
pub use reader::{ImageError, ImageFile};
pub use writer::{layout, live_head, region_hash, trailer_bytes, ImageWriter};
