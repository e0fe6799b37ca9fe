//! A catalog and helpers shared by the negotiation tests.

use super::super::client::{OptionReply, decode_option_replies};
use super::super::*;
use std::cell::RefCell;

pub const R0_SIZE: u64 = 64 << 20;
pub const R0_FLAGS: u16 =
    FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
pub const SECONDARY_MSG: &str =
    "resource sec is Secondary; promote it with `drbdadm primary sec` or enable auto-promote";

/// `r0` (also the default export ""), `sec` (refuses GO), `ro` (read-only); records lookups.
#[derive(Debug, Default)]
pub struct TestCatalog {
    pub lookups: RefCell<Vec<(String, Purpose)>>,
}

impl ExportCatalog for TestCatalog {
    fn lookup(&self, name: &str, purpose: Purpose) -> Result<ExportInfo, GoRefusal> {
        self.lookups.borrow_mut().push((name.to_owned(), purpose));
        let info = |n: &str, flags| ExportInfo {
            name: n.to_owned(),
            size: R0_SIZE,
            flags,
            description: Some(format!("replicated {n}")),
            block_sizes: BlockSizes::default(),
        };
        match (name, purpose) {
            ("r0" | "", _) => Ok(info("r0", R0_FLAGS)),
            ("ro", _) => Ok(info("ro", R0_FLAGS | FLAG_READ_ONLY)),
            ("sec", Purpose::Info) => Ok(info("sec", R0_FLAGS)),
            ("sec", Purpose::Go) => Err(GoRefusal::new(RepError::Policy, SECONDARY_MSG)),
            _ => Err(GoRefusal::unknown(name)),
        }
    }

    fn list(&self) -> Vec<(String, Option<String>)> {
        vec![
            ("r0".into(), Some("replicated r0".into())),
            ("sec".into(), None),
        ]
    }
}

pub fn flags() -> ClientFlags {
    ClientFlags {
        fixed_newstyle: true,
        no_zeroes: true,
    }
}

pub fn neg(cat: &TestCatalog) -> Negotiation<&TestCatalog> {
    Negotiation::new(flags(), cat)
}

pub fn structured(n: &mut Negotiation<&TestCatalog>) {
    let out = n.handle_option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(types(&out), vec![REP_ACK]);
}

pub fn replies(out: &OptionOutcome) -> Vec<OptionReply> {
    decode_option_replies(&out.reply).expect("server replies decode")
}

pub fn types(out: &OptionOutcome) -> Vec<u32> {
    replies(out).iter().map(|r| r.reply_type).collect()
}

pub fn transmission(out: OptionOutcome) -> Negotiated {
    match out.next {
        Next::Transmission(n) => *n,
        other => panic!("expected transmission, got {other:?}"),
    }
}
