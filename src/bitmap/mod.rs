//! The dirty bitmap.
