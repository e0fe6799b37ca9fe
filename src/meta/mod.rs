//! On-disk metadata codecs.
