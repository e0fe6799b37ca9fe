//! `drbdadm disconnect` as a cluster-wide change under `fencing resource-only`, from either
//! side, while the Primary writes: the Secondary parts Outdated, the Primary knows it and
//! calls no fence-peer, nothing acknowledged is lost, and after `connect` both converge.

use super::pair::{A, B, World};
use super::scenarios::ready_in;
use udrbd::config::{Fencing, Protocol};
use udrbd::repl::handler::Handler;
use udrbd::repl::{AdminCmd, ConnState, DiskState};

fn planned_disconnect_run(seed: u64) {
    let w = World::with_peers(9700 + seed, Protocol::C, |_, p| {
        p.fencing = Fencing::ResourceOnly;
    });
    let mut s = ready_in(w).write_random(40);
    // Writes in flight while it happens, from either side.
    let who = (seed % 2) as usize;
    for _ in 0..(seed % 7) {
        s.w.app_write(A);
    }
    s.w.admin(who, AdminCmd::Disconnect);
    s.w.run_until(20_000, "the disconnect", |w| {
        w.standalone[who] && w.n[1 - who].status_peer().conn != ConnState::Connected
    });
    if s.w.last_admin(who) != Some(&Ok(())) {
        s.w.fail(format!("disconnect: {:?}", s.w.last_admin(who)));
    }
    if s.w.n[B].engine.disk_state() != DiskState::Outdated {
        s.w.fail("the Secondary did not part Outdated");
    }
    if s.w.n[A].status_peer().disk != DiskState::Outdated {
        s.w.fail("the Primary does not know its peer Outdated");
    }
    if s.w.n[A].handlers.contains(&Handler::FencePeer) {
        s.w.fail("fence-peer ran for a planned disconnect");
    }
    // The Primary goes on alone; then the Secondary comes back and catches up.
    s = s.write_random(40).drain();
    s.w.reconnect(who, false);
    let s = s.expect_in_sync();
    for i in [A, B] {
        s.w.check_data_model(i);
    }
}

#[test]
fn a_planned_disconnect_outdates_the_secondary_and_fences_nobody() {
    super::for_each_seed(40, planned_disconnect_run);
}
