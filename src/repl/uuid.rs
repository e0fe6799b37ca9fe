//! New generation UUIDs from a seeded generator: the engine stays deterministic (the simulator
//! replays a run from its seed) while the driver seeds it from the OS, so two nodes never draw
//! the same UUIDs.

use crate::types::GenUuid;

/// SplitMix64: tiny, full-period over u64, and good enough to make collisions between two
/// nodes' generations astronomically unlikely. Not cryptographic, and it need not be.
#[derive(Clone, Debug)]
pub struct UuidGen {
    state: u64,
}

impl UuidGen {
    pub fn new(seed: u64) -> Self {
        UuidGen { state: seed }
    }

    /// A fresh generation UUID with DRBD's role bit set for a Primary. Never zero and never the
    /// just-created sentinel, which both mean something else.
    pub fn next(&mut self, primary: bool) -> GenUuid {
        loop {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let v = (z & !GenUuid::PRIMARY_BIT) | u64::from(primary);
            let g = GenUuid(v);
            if !g.is_zero() && !g.same_as(GenUuid::JUST_CREATED) {
                return g;
            }
        }
    }
}
