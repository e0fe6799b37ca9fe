//! Resync pacing, PURE: how many bytes the SyncTarget may request in the next controller step.
//!
//! Two modes, as DRBD has them (`drbd_rs_controller()`, `drbd_rs_number_requests()` in
//! `drbd_sender.c`), stepped every [`STEP_MS`] (DRBD's `SLEEP_TIME`, 100 ms) while a run is active:
//! the step is a deadline the engine reports through `poll_timeout`, not a periodic tick.
//!
//! - **fixed** (`c-plan-ahead 0`): `resync-rate` KiB/s, spread evenly over the steps;
//! - **dynamic** (`c-plan-ahead` > 0): keep `c-fill-target` sectors in flight (or, with a fill
//!   target of 0, as much as arrives in `c-delay-target`), planning corrections
//!   `c-plan-ahead` ahead, never above `c-max-rate`.
//!
//! `c-min-rate`: while application I/O competes for the disk, resync is held to `c-min-rate`
//! (DRBD throttles resync above that rate when the backing device is busy with application
//! requests). A `c-min-rate` of 0 disables the throttle.

use crate::config::PeerDeviceOptions;
use crate::types::Time;
use std::collections::VecDeque;

/// Sectors are DRBD's unit for the controller's fill target.
const SECTOR: u64 = 512;
/// The controller's step (DRBD's `SLEEP_TIME`).
pub const STEP_MS: u64 = 100;
/// Controller steps per second.
const STEPS_PER_SEC: u64 = 1000 / STEP_MS;

/// The pacing state of one resync.
#[derive(Clone, Debug)]
pub struct Controller {
    opts: PeerDeviceOptions,
    /// Planned corrections, in bytes per step, `c-plan-ahead` steps deep.
    plan: VecDeque<i64>,
}

impl Controller {
    pub fn new(opts: PeerDeviceOptions) -> Controller {
        let steps = (opts.c_plan_ahead as usize).max(1);
        Controller {
            opts,
            plan: VecDeque::from(vec![0; steps]),
        }
    }

    /// The byte budget for the next step. `arrived`: resync bytes received in the last step;
    /// `in_flight`: bytes requested and not yet received; `app_busy`: application I/O ran in
    /// the last step.
    pub fn step(&mut self, arrived: u64, in_flight: u64, app_busy: bool) -> u64 {
        let budget = if self.opts.c_plan_ahead == 0 {
            kib_per_step(self.opts.resync_rate)
        } else {
            self.dynamic(arrived, in_flight)
        };
        if app_busy && self.opts.c_min_rate > 0 {
            budget.min(kib_per_step(self.opts.c_min_rate).max(1))
        } else {
            budget
        }
    }

    fn dynamic(&mut self, arrived: u64, in_flight: u64) -> u64 {
        let steps = self.plan.len() as i64;
        let want = if self.opts.c_fill_target > 0 {
            u64::from(self.opts.c_fill_target) * SECTOR
        } else {
            // What arrives in `c-delay-target` (tenths of a second) at the current rate.
            arrived * u64::from(self.opts.c_delay_target) * STEPS_PER_SEC / 10
        } as i64;
        let planned: i64 = self.plan.iter().sum();
        let correction = want - in_flight as i64 - planned;
        let per_step = correction / steps;
        for p in self.plan.iter_mut() {
            *p += per_step;
        }
        let now = self.plan.pop_front().unwrap_or(0);
        self.plan.push_back(0);
        let req = (arrived as i64 + now).max(0) as u64;
        let max = if self.opts.c_max_rate == 0 {
            u64::MAX
        } else {
            kib_per_step(self.opts.c_max_rate)
        };
        req.min(max)
    }
}

/// A KiB/s rate as bytes per controller step.
fn kib_per_step(kib: u32) -> u64 {
    u64::from(kib) * 1024 / STEPS_PER_SEC
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(plan: u32, fill: u32, max: u32) -> PeerDeviceOptions {
        PeerDeviceOptions {
            resync_rate: 1000,
            c_plan_ahead: plan,
            c_fill_target: fill,
            c_max_rate: max,
            c_min_rate: 0,
            ..PeerDeviceOptions::default()
        }
    }

    #[test]
    fn fixed_rate_spreads_resync_rate_over_steps() {
        let mut c = Controller::new(opts(0, 0, 0));
        // 1000 KiB/s at 10 steps per second.
        assert_eq!(c.step(0, 0, false), 102_400);
        assert_eq!(c.step(5_000_000, 0, false), 102_400);
    }

    #[test]
    fn dynamic_fills_to_the_target_and_then_follows_arrivals() {
        let mut c = Controller::new(opts(20, 2000, 0)); // 1 MB fill target, 2 s plan ahead
        let target = 2000 * 512;
        let mut in_flight = 0u64;
        let mut total = 0;
        // A link that answers everything in one step: what is requested arrives next step.
        let mut arrived = 0;
        for _ in 0..200 {
            let b = c.step(arrived, in_flight, false);
            arrived = in_flight;
            in_flight = b;
            total += b;
        }
        assert!(total > 0);
        // Converged: in flight close to the fill target.
        assert!(
            (in_flight as i64 - target as i64).abs() < target as i64 / 5,
            "in flight {in_flight} vs target {target}"
        );
    }

    #[test]
    fn max_rate_caps_the_dynamic_controller() {
        let mut c = Controller::new(opts(10, 1_000_000, 100)); // 100 KiB/s
        for _ in 0..50 {
            assert!(c.step(10 << 20, 0, false) <= 10_240);
        }
    }

    #[test]
    fn min_rate_throttles_while_the_application_is_busy() {
        let mut o = opts(0, 0, 0);
        o.c_min_rate = 250;
        let mut c = Controller::new(o);
        assert_eq!(c.step(0, 0, true), 25_600);
        assert_eq!(c.step(0, 0, false), 102_400);
    }
}

/// The pacing of one run, a resync or a verify, on either side: the requesting side (the
/// SyncTarget, the VerifyS) spends a byte budget that the [`Controller`] refills every step;
/// both sides keep the rate window their status shows.
#[derive(Debug)]
pub struct Pacer {
    ctl: Controller,
    /// Whether this side asks for data, and so is paced by the budget.
    requests: bool,
    /// Bytes that may still be requested in this step (negative: overdrawn).
    budget: i64,
    /// Bytes that arrived (or were answered) in this step.
    arrived: u64,
    window: RateWindow,
    /// When the current step began, and when it ends.
    step_started: Time,
    next_step: Time,
}

impl Pacer {
    /// A requesting side may ask at once: its first budget is granted here, not a step later.
    /// The first step ends [`STEP_MS`] after `now`.
    pub fn new(opts: PeerDeviceOptions, requests: bool, now: Time) -> Pacer {
        let mut ctl = Controller::new(opts);
        let budget = if requests {
            ctl.step(0, 0, false) as i64
        } else {
            0
        };
        Pacer {
            ctl,
            requests,
            budget,
            arrived: 0,
            window: RateWindow::default(),
            step_started: now,
            next_step: now.plus_ms(STEP_MS),
        }
    }

    /// New controller settings (`drbdadm adjust`), from the next step on.
    pub fn set_options(&mut self, opts: PeerDeviceOptions) {
        self.ctl = Controller::new(opts);
    }

    /// When the current step ends.
    pub fn next_step(&self) -> Time {
        self.next_step
    }

    /// Ends the current step if it is due at `now`; true if it did. `last_app_io`: when
    /// application I/O last arrived (the `c-min-rate` throttle applies to a step that saw
    /// some). A timer that fired late ends one step, not every step it missed: the rate window
    /// is about what moved, and a burst of empty steps would only distort it.
    pub fn step_if_due(&mut self, now: Time, in_flight: u64, last_app_io: Option<Time>) -> bool {
        if now < self.next_step {
            return false;
        }
        let busy = last_app_io.is_some_and(|t| t >= self.step_started);
        self.step(in_flight, busy);
        self.step_started = now;
        let next = self.next_step.plus_ms(STEP_MS);
        self.next_step = if next > now {
            next
        } else {
            now.plus_ms(STEP_MS)
        };
        true
    }

    /// Ends a controller step. `in_flight`: bytes requested and not yet received. An overdraft
    /// is carried into the new budget, an unspent budget is not (DRBD does not bank it either).
    fn step(&mut self, in_flight: u64, app_busy: bool) {
        let arrived = std::mem::take(&mut self.arrived);
        self.window.push(arrived);
        if self.requests {
            let step = self.ctl.step(arrived, in_flight, app_busy) as i64;
            self.budget = self.budget.min(0) + step;
        }
    }

    /// Counts bytes that arrived in this step.
    pub fn arrived(&mut self, bytes: u64) {
        self.arrived += bytes;
    }

    /// Whether the budget allows another request.
    pub fn may_request(&self) -> bool {
        self.budget > 0
    }

    /// Takes a request's bytes from the budget (it may go negative: a request is not split).
    pub fn spend(&mut self, bytes: u64) {
        self.budget -= bytes as i64;
    }

    /// Bytes per second over the last second.
    pub fn rate(&self) -> u64 {
        self.window.bytes_per_sec()
    }
}

/// Bytes moved per controller step over the last second: the rate status shows (`dbdt1`) for
/// a resync or a verify.
#[derive(Debug, Default)]
struct RateWindow {
    steps: std::collections::VecDeque<u64>,
}

impl RateWindow {
    /// Records the bytes of the step that just ended.
    fn push(&mut self, bytes: u64) {
        self.steps.push_back(bytes);
        if self.steps.len() as u64 > STEPS_PER_SEC {
            self.steps.pop_front();
        }
    }

    /// Bytes per second over the steps recorded.
    fn bytes_per_sec(&self) -> u64 {
        self.steps.iter().sum::<u64>() * STEPS_PER_SEC / self.steps.len().max(1) as u64
    }
}
