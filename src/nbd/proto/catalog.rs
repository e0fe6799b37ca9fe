//! What the negotiation needs to know about exports, and the trait the daemon implements to
//! tell it. Kept apart from the state machine so the driver side can implement it without
//! reading option-haggling code.

use super::errors::RepError;
use super::option_reply::BlockSizes;
use std::sync::Arc;

/// Why the export is being looked up. `NBD_OPT_INFO`, `NBD_OPT_LIST_META_CONTEXT` and
/// `NBD_OPT_SET_META_CONTEXT` only probe; `NBD_OPT_GO` and `NBD_OPT_EXPORT_NAME` open the export
/// and hold it until the client disconnects. A Secondary resource auto-promotes (DRBD 9's
/// `auto-promote`) only for [`Purpose::Go`], and a successful `Go` lookup is always followed by
/// transmission: the negotiation checks everything else first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A probe: describe the export, change nothing.
    Info,
    /// Open the export for I/O.
    Go,
}

/// One export as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Canonical name (`NBD_INFO_NAME`); may differ from the name the client asked for, e.g. for
    /// the default export "".
    pub name: String,
    /// Size in bytes; should be a multiple of `block_sizes.min`.
    pub size: u64,
    /// Transmission flags (`FLAG_*`). The negotiation adds `HAS_FLAGS`, sets `SEND_DF` exactly
    /// when structured replies were negotiated, and clears flags the spec forbids in context.
    pub flags: u16,
    /// Free text for `NBD_INFO_DESCRIPTION` and `NBD_REP_SERVER`.
    pub description: Option<String>,
    /// Advertised with `NBD_INFO_BLOCK_SIZE` and enforced by request validation.
    pub block_sizes: BlockSizes,
}

/// A refused lookup: the option reply error and a message for the human at the client, e.g.
/// "resource r0 is Secondary; promote it with `drbdadm primary r0` or enable auto-promote".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRefusal {
    /// Usually [`RepError::Unknown`] (no such export) or [`RepError::Policy`] (exists, but
    /// cannot be opened now).
    pub error: RepError,
    /// Sent with the error reply (truncated to 4096 bytes).
    pub message: String,
}

impl GoRefusal {
    /// A refusal with any error type.
    pub fn new(error: RepError, message: impl Into<String>) -> Self {
        GoRefusal {
            error,
            message: message.into(),
        }
    }

    /// `NBD_REP_ERR_UNKNOWN` for an export that does not exist.
    pub fn unknown(name: &str) -> Self {
        GoRefusal::new(RepError::Unknown, format!("no export named {name:?}"))
    }
}

/// The exports a server offers. Implemented by the daemon over its resources.
pub trait ExportCatalog {
    /// Describes (and for [`Purpose::Go`] opens) the export `name`.
    fn lookup(&self, name: &str, purpose: Purpose) -> Result<ExportInfo, GoRefusal>;
    /// Every export, with its optional description, for `NBD_OPT_LIST`.
    fn list(&self) -> Vec<(String, Option<String>)>;
}

impl<T: ExportCatalog + ?Sized> ExportCatalog for &T {
    fn lookup(&self, name: &str, purpose: Purpose) -> Result<ExportInfo, GoRefusal> {
        (**self).lookup(name, purpose)
    }
    fn list(&self) -> Vec<(String, Option<String>)> {
        (**self).list()
    }
}

impl<T: ExportCatalog + ?Sized> ExportCatalog for Arc<T> {
    fn lookup(&self, name: &str, purpose: Purpose) -> Result<ExportInfo, GoRefusal> {
        (**self).lookup(name, purpose)
    }
    fn list(&self) -> Vec<(String, Option<String>)> {
        (**self).list()
    }
}

impl<T: ExportCatalog + ?Sized> ExportCatalog for Box<T> {
    fn lookup(&self, name: &str, purpose: Purpose) -> Result<ExportInfo, GoRefusal> {
        (**self).lookup(name, purpose)
    }
    fn list(&self) -> Vec<(String, Option<String>)> {
        (**self).list()
    }
}
