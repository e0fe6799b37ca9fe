//! Quorum, PURE: DRBD 9's `calc_quorum()` (`drbd_state.c`), which decides from the states of
//! this node and its peers whether this node may write.
//!
//! Every node that has or had a disk in the resource is a *voter*. A voter this node cannot see
//! is *unknown* unless it is known not to hold newer data (Outdated or Inconsistent, or fenced:
//! `MDF_PEER_OUTDATED`): such a node cannot form a quorum of its own that promotes, so when
//! every absent voter is known to be outdated they are left out of the count ("last man
//! standing"). A partition has quorum when it sees `quorum_at` voters (`majority`: more than
//! half; `all`; or a number), of which at least `quorum-minimum-redundancy` are UpToDate.
//!
//! Intentionally diskless nodes (`disk none;`, DRBD's diskless clients) do not vote. DRBD also
//! lets them break a tie (`peer-tiebreaker`): with an even number of voters, a partition one
//! vote short keeps the quorum it had while it sees a majority of the diskless nodes. That is
//! safe in DRBD only because every connection loss is a cluster-wide state change the
//! diskless node takes part in, so it sides with one partition; udrbd's connection losses are
//! local, and when a partition forms one link at a time both halves would see the diskless
//! node for a moment and keep quorum, each completing writes the other lacks (the three-node
//! simulator found it). udrbd leaves the tiebreaker out until connection losses are agreed
//! cluster-wide: two diskful nodes and a diskless one lose quorum when either diskful node
//! goes.
//!
//! A diskless node itself has quorum when it sees an UpToDate peer that has quorum (the peer
//! says so in its State packet), or when the votes it sees make one.
//!
//! Also stricter than DRBD: a connected voter whose disk failed (Diskless without being
//! configured so) counts as unknown, not as present (see [`tally`]).
//!
//! Left out: DRBD's `quorumless` members (nodes that left a partition that had quorum, which
//! DRBD tracks with the cluster-wide `members` mask): udrbd counts them as unknown, which
//! keeps quorum less often, never more.

use super::state::DiskState;
use crate::config::Quorum;

/// How this node votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfVote {
    pub disk: DiskState,
    /// Configured without a disk (`disk none;`): a diskless client, not a voter that lost its
    /// disk.
    pub intentional_diskless: bool,
}

/// What this node knows of one configured peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerVote {
    /// Connected, past the handshake (DRBD's `repl_state != L_OFF`).
    pub connected: bool,
    /// Its disk as this node sees it (kept as Outdated or Inconsistent while disconnected when
    /// that is known, DUnknown otherwise).
    pub disk: DiskState,
    /// Configured without a disk (`disk none;` in its `on` section).
    pub intentional_diskless: bool,
    /// Fenced or outdated, as this node's metadata records it (`MDF_PEER_OUTDATED`).
    pub outdated_mark: bool,
    /// It said it has quorum (its State packet).
    pub quorate: bool,
}

/// The counts `calc_quorum()` works with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub up_to_date: u32,
    pub present: u32,
    pub outdated: u32,
    pub unknown: u32,
    pub quorate_peers: u32,
}

/// The verdict, with what explains it (DRBD's `struct quorum_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub have: bool,
    pub voters: u32,
    pub up_to_date: u32,
    pub present: u32,
    pub quorum_at: u32,
    pub min_redundancy_at: u32,
}

impl Verdict {
    /// Why a promotion without quorum is refused, in DRBD's words.
    pub fn explain(&self, diskless: bool) -> String {
        if diskless {
            "no UpToDate peer with quorum".to_string()
        } else if self.up_to_date + self.present < self.quorum_at {
            format!(
                "{} of {} nodes visible, need {} for quorum",
                self.up_to_date + self.present,
                self.voters,
                self.quorum_at
            )
        } else {
            format!(
                "{} of {} nodes up_to_date, need {} for quorum-minimum-redundancy",
                self.up_to_date, self.voters, self.min_redundancy_at
            )
        }
    }
}

/// DRBD's `calc_quorum_at()`.
fn quorum_at(setting: Quorum, voters: u32) -> u32 {
    match setting {
        // `off` as a minimum redundancy asks for nothing.
        Quorum::Off => 0,
        Quorum::Majority => voters / 2 + 1,
        Quorum::All => voters,
        Quorum::Nodes(n) => n,
    }
}

/// Counts the votes (DRBD's `__calc_quorum_with_disk()` and `__calc_quorum_no_disk()`).
pub fn tally(me: SelfVote, peers: &[PeerVote]) -> Tally {
    let mut t = Tally::default();
    let with_disk = me.disk > DiskState::Attaching;
    if with_disk {
        if me.disk == DiskState::UpToDate {
            t.up_to_date += 1;
        } else {
            t.present += 1;
        }
    } else if me.disk == DiskState::Diskless && !me.intentional_diskless {
        // A node that lost its disk has no vote to give: it counts as a voter it cannot
        // vouch for.
        t.unknown += 1;
    }
    for p in peers {
        if p.intentional_diskless {
            // Diskless clients do not vote (and break no ties: see the module docs).
            continue;
        }
        if !p.connected {
            if p.disk <= DiskState::Outdated || (with_disk && p.outdated_mark) {
                t.outdated += 1;
            } else {
                t.unknown += 1;
            }
        } else if p.disk == DiskState::Diskless {
            // A voter whose disk failed holds no data: DRBD counts it as present, which lets
            // a node with stale data and such a peer form a "majority" and promote over the
            // newer data the other side holds. udrbd counts it as unknown.
            t.unknown += 1;
        } else if p.disk == DiskState::UpToDate {
            t.up_to_date += 1;
        } else {
            t.present += 1;
        }
        if !with_disk && p.connected && p.disk == DiskState::UpToDate && p.quorate {
            t.quorate_peers += 1;
        }
    }
    t
}

/// Decides (DRBD's `calc_quorum()`, without the diskless tiebreaker: see the module docs).
pub fn decide(quorum: Quorum, min_redundancy: Quorum, t: Tally) -> Verdict {
    // When every absent voter is known to be outdated, the absent cannot promote: they are
    // not counted.
    let voters = if t.unknown > 0 {
        t.outdated + t.unknown + t.up_to_date + t.present
    } else {
        t.up_to_date + t.present
    };
    let at = quorum_at(quorum, voters);
    let min_redundancy_at = quorum_at(min_redundancy, voters);
    let have = t.quorate_peers > 0
        || (t.up_to_date + t.present >= at && t.up_to_date >= min_redundancy_at);
    Verdict {
        have,
        voters,
        up_to_date: t.up_to_date,
        present: t.present,
        quorum_at: at,
        min_redundancy_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DiskState as D;

    fn me(disk: DiskState) -> SelfVote {
        SelfVote {
            disk,
            intentional_diskless: false,
        }
    }

    fn peer(connected: bool, disk: DiskState) -> PeerVote {
        PeerVote {
            connected,
            disk,
            intentional_diskless: false,
            outdated_mark: false,
            quorate: false,
        }
    }

    fn diskless(connected: bool) -> PeerVote {
        PeerVote {
            intentional_diskless: true,
            ..peer(connected, if connected { D::Diskless } else { D::DUnknown })
        }
    }

    fn verdict(me: SelfVote, peers: &[PeerVote]) -> Verdict {
        decide(Quorum::Majority, Quorum::Off, tally(me, peers))
    }

    #[test]
    fn three_diskful_nodes_need_two() {
        let up = peer(true, D::UpToDate);
        let gone = peer(false, D::DUnknown);
        assert!(verdict(me(D::UpToDate), &[up, gone]).have);
        assert!(verdict(me(D::UpToDate), &[up, up]).have);
        let alone = verdict(me(D::UpToDate), &[gone, gone]);
        assert!(!alone.have);
        assert_eq!(
            alone.explain(false),
            "1 of 3 nodes visible, need 2 for quorum"
        );
    }

    #[test]
    fn outdated_absent_nodes_do_not_count_last_man_standing() {
        // Both peers left Outdated: they cannot promote, so this node keeps quorum alone.
        let outdated = peer(false, D::Outdated);
        assert!(verdict(me(D::UpToDate), &[outdated, outdated]).have);
        // One of them unknown: all absent count again.
        let gone = peer(false, D::DUnknown);
        assert!(!verdict(me(D::UpToDate), &[outdated, gone]).have);
        // The fence mark in the metadata says the same as an Outdated disk.
        let fenced = PeerVote {
            outdated_mark: true,
            ..gone
        };
        assert!(verdict(me(D::UpToDate), &[fenced, fenced]).have);
    }

    #[test]
    fn a_diskless_client_is_no_voter_and_no_tiebreaker() {
        // Two diskful nodes and a diskless one: losing the other diskful node loses quorum,
        // whichever side the diskless node is on.
        let gone = peer(false, D::DUnknown);
        assert!(!verdict(me(D::UpToDate), &[gone, diskless(true)]).have);
        assert!(!verdict(me(D::UpToDate), &[gone, diskless(false)]).have);
        let up = peer(true, D::UpToDate);
        assert!(verdict(me(D::UpToDate), &[up, diskless(false)]).have);
    }

    #[test]
    fn a_diskless_node_has_quorum_through_a_quorate_peer() {
        let me = SelfVote {
            disk: D::Diskless,
            intentional_diskless: true,
        };
        let quorate = PeerVote {
            quorate: true,
            ..peer(true, D::UpToDate)
        };
        let gone = peer(false, D::DUnknown);
        assert!(verdict(me, &[quorate, gone]).have);
        let not_quorate = peer(true, D::UpToDate);
        // One of two diskful voters seen: no majority, and no quorate peer.
        assert!(!verdict(me, &[not_quorate, gone]).have);
        assert!(!verdict(me, &[gone, gone]).have);
    }

    #[test]
    fn minimum_redundancy_counts_up_to_date_nodes() {
        let t = tally(
            me(D::UpToDate),
            &[peer(true, D::Inconsistent), peer(false, D::DUnknown)],
        );
        assert!(decide(Quorum::Majority, Quorum::Off, t).have);
        let v = decide(Quorum::Majority, Quorum::Nodes(2), t);
        assert!(!v.have);
        assert_eq!(
            v.explain(false),
            "1 of 3 nodes up_to_date, need 2 for quorum-minimum-redundancy"
        );
    }

    #[test]
    fn all_and_a_number() {
        let up = peer(true, D::UpToDate);
        let gone = peer(false, D::DUnknown);
        let t = |peers: &[PeerVote]| tally(me(D::UpToDate), peers);
        assert!(!decide(Quorum::All, Quorum::Off, t(&[up, gone])).have);
        assert!(decide(Quorum::All, Quorum::Off, t(&[up, up])).have);
        assert!(decide(Quorum::Nodes(1), Quorum::Off, t(&[gone, gone])).have);
    }

    #[test]
    fn a_peer_whose_disk_failed_adds_no_vote() {
        // A stale node and a peer without its disk are not a majority of three.
        let failed = peer(true, D::Diskless);
        let gone = peer(false, D::DUnknown);
        assert!(!verdict(me(D::UpToDate), &[failed, gone]).have);
    }

    #[test]
    fn a_node_that_lost_its_disk_has_no_vote() {
        let gone = peer(false, D::DUnknown);
        let up = peer(true, D::UpToDate);
        // Counted unknown itself: 1 of 3 UpToDate seen.
        assert!(!verdict(me(D::Diskless), &[up, gone]).have);
    }
}
