//! Unit, golden and property tests for the NBD protocol layer.

mod golden;
mod negotiate;
mod options;
mod props;
mod replies;
mod support;
mod validate;
