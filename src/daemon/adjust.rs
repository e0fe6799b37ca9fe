//! `drbdadm adjust` in the daemon: plans with [`crate::ctl::adjust`] and applies the steps in
//! order (detach, disconnect, the new settings, attach, connect), stopping at the first that
//! fails; what was applied before it stays applied, as with DRBD's drbdsetup calls.

use super::{Daemon, E_CONFIG, admin_failure, check_links, error};
use crate::config::Resolved;
use crate::ctl::adjust::{Step, plan, up_steps};
use crate::ctl::{ResourceSpec, Response};
use crate::repl::AdminCmd;

impl Daemon {
    pub(super) async fn adjust(&self, resolved: &Resolved, dry_run: bool) -> Response {
        let want = match ResourceSpec::from_resolved(resolved) {
            Ok(s) => s,
            Err(e) => return error(E_CONFIG, e),
        };
        if let Err(r) = check_links(&want) {
            return r;
        }
        let Some(d) = self.get(&want.name) else {
            let mut steps = vec![format!(
                "drbdsetup new-resource {} {}",
                want.name, want.node_id
            )];
            steps.extend(up_steps(&want).iter().flat_map(|s| s.lines(&want, false)));
            if dry_run {
                return Response::Adjusted {
                    steps,
                    notes: Vec::new(),
                };
            }
            return match self.up(resolved).await {
                Response::Ok => Response::Adjusted {
                    steps,
                    notes: Vec::new(),
                },
                // The kernel device could not be made: the operator reads why.
                Response::Notice { message } => Response::Adjusted {
                    steps,
                    notes: vec![message],
                },
                other => other,
            };
        };
        let run = d.spec();
        let plan = match plan(&run, &d.view(), &want) {
            Ok(p) => p,
            Err(e) => return error(E_CONFIG, e),
        };
        let lines: Vec<String> = plan.iter().flat_map(|s| s.lines(&want, false)).collect();
        if dry_run || plan.is_empty() {
            if !dry_run && *run != want {
                // Nothing to do, but the spec takes what differs without a step (a `size`
                // the peer's resize applied here already): a later attach must use it.
                d.reconfigure(want);
            }
            let notes = match dry_run {
                true => Vec::new(),
                false => self.ensure_kernel_device(&d).await.into_iter().collect(),
            };
            return Response::Adjusted {
                steps: lines,
                notes,
            };
        }
        tracing::info!("{}: adjust: {}", want.name, lines.join("; "));
        let name = want.name.clone();
        let mut reconfigured = false;
        let mut connect = false;
        for step in &plan {
            match step {
                Step::Detach => {
                    if let Err(e) = d.admin(AdminCmd::Detach).await {
                        return admin_failure(&name, &e, &d);
                    }
                }
                Step::Disconnect { .. } => {
                    // Agreed with the peer, as `drbdadm disconnect`: a Primary fences nobody
                    // for a connection closed to change its settings.
                    if let Err(e) = d.admin(AdminCmd::Disconnect).await {
                        return admin_failure(&name, &e, &d);
                    }
                    d.stop_links().await;
                }
                Step::ResourceOptions(_)
                | Step::NetOptions { .. }
                | Step::Path { .. }
                | Step::PeerDeviceOptions { .. }
                | Step::Handlers(_)
                | Step::DiskOptions(_)
                | Step::Attach => {
                    // Once, after the detach and disconnect steps (which run on the old
                    // settings); an attach uses the new disk's path and options.
                    if !reconfigured {
                        d.reconfigure(want.clone());
                        reconfigured = true;
                    }
                    if matches!(step, Step::Attach) {
                        let r = self.attach(&d).await;
                        if r != Response::Ok {
                            return r;
                        }
                    }
                }
                Step::Connect { .. } => connect = true,
                Step::Resize { .. } => {}
            }
        }
        if !reconfigured {
            // Nothing but connects: the spec is the same in all a step would show, but a
            // handler's text or the config file's path may differ.
            d.reconfigure(want);
        }
        // With the new settings in place (a resize runs the handshake with connected peers).
        if let Some(Step::Resize { size_bytes }) =
            plan.iter().find(|s| matches!(s, Step::Resize { .. }))
            && let Err(e) = d
                .admin(AdminCmd::Resize {
                    no_resync: false,
                    user_bytes: *size_bytes,
                })
                .await
        {
            return admin_failure(&name, &e, &d);
        }
        if connect {
            if let Err(e) = d
                .admin(AdminCmd::Connect {
                    discard_my_data: false,
                    tentative: false,
                })
                .await
            {
                return admin_failure(&name, &e, &d);
            }
            // Starts a task for every peer without one: the StandAlone ones and those closed
            // above, which now run the new settings.
            d.start_links();
        }
        // A device the config asks for and the resource lacks (a diskless node whose size
        // was unknown at `up`, a module loaded since).
        let notes = self.ensure_kernel_device(&d).await.into_iter().collect();
        Response::Adjusted {
            steps: lines,
            notes,
        }
    }
}
