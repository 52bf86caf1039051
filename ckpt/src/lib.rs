//! mos checkpoint engine: the image format, shared context layouts, and the restorer.
//! The dump side runs inside the application (see `libmosshim`); this crate holds what
//! both sides must agree on, and everything the restorer does.

pub mod control;
pub mod ctx;
pub mod image;
pub mod maps;
pub mod restore;
pub mod sys;
