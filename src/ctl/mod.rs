//! The control socket: how `drbdadm` drives the daemon (as drbdadm drives drbdsetup).
//!
//! One JSON object per line in each direction, one request per connection
//! (`$UDRBD_RUN_DIR/ctl.sock`). `drbdadm` resolves the configuration and sends the whole
//! resource on `up`, so the daemon runs exactly what the files said when `up` ran.
//!
//! - [`proto`]: the request and response types (serde), shared by both ends.
//! - [`server`]: the daemon's listener (tokio).
//! - [`client`]: the blocking client `drbdadm` uses.

pub mod adjust;
pub mod client;
pub mod proto;
pub mod server;

pub use proto::{
    ConnectionView, Event, HelperEvent, PathView, PeerSpec, Request, ResourceSpec, ResourceView,
    Response, StreamLine, VolumeView,
};
