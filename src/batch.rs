//! Completion batches: a thread that runs many completion callbacks in a row (the io_uring
//! reaper with a handful of CQEs) marks the run with [`scope`], and a callback that would rather
//! handle its result together with its siblings' defers it with [`defer_grouped`]: the driver
//! then feeds all the disk completions of one reap to the engine under one lock, and the acks
//! they cause leave in one write.
//!
//! Thread-local and synchronous: deferred work runs on the same thread, before [`scope`]
//! returns, so nothing waits past the end of the run that produced it, and no thread waits for
//! another's. A panic inside a scope drops what was deferred in it (release builds abort on
//! panic), so a later batch on the thread starts clean. This module does no I/O; the disk
//! engines open scopes and the driver defers into them.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

type Hook = Box<dyn FnOnce()>;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static AT_END: RefCell<Vec<Hook>> = const { RefCell::new(Vec::new()) };
    /// The open groups of [`defer_grouped`]: key, and the `Rc<RefCell<Vec<T>>>` its hook drains.
    static GROUPS: RefCell<Vec<(usize, Rc<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` as one batch: work deferred with [`at_end`] inside it (also by nested scopes) runs
/// when the outermost scope ends, in the order it was deferred.
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    DEPTH.with(|d| d.set(d.get() + 1));
    // Ends the scope even if `f` panics, so a later batch on this thread is not stuck inside
    // this one.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            let depth = DEPTH.with(|d| {
                let v = d.get() - 1;
                d.set(v);
                v
            });
            if depth > 0 {
                return;
            }
            if std::thread::panicking() {
                AT_END.with(|h| h.borrow_mut().clear());
                GROUPS.with(|g| g.borrow_mut().clear());
                return;
            }
            // Hooks may defer more work (nothing is in scope now, so they run it directly);
            // drain until none is left.
            while let Some(hooks) = AT_END.with(|h| {
                let v = std::mem::take(&mut *h.borrow_mut());
                (!v.is_empty()).then_some(v)
            }) {
                for hook in hooks {
                    hook();
                }
            }
        }
    }
    let _leave = Leave;
    f()
}

/// Whether this thread is inside a [`scope`].
pub fn in_scope() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Runs `hook` when the current [`scope`] ends; at once when there is none.
pub fn at_end(hook: impl FnOnce() + 'static) {
    if in_scope() {
        AT_END.with(|h| h.borrow_mut().push(Box::new(hook)));
    } else {
        hook();
    }
}

/// Defers `item` to the end of the current [`scope`], together with the items deferred under
/// the same `key` on this thread: `flush` of the first of them runs once with all of them, in
/// order (the later `flush` closures are dropped). Without a scope, `flush` runs at once with
/// `item` alone.
pub fn defer_grouped<T: 'static>(key: usize, item: T, flush: impl FnOnce(Vec<T>) + 'static) {
    if !in_scope() {
        return flush(vec![item]);
    }
    let open = GROUPS.with(|g| {
        g.borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| Rc::clone(v).downcast::<RefCell<Vec<T>>>().ok())
    });
    if let Some(items) = open {
        items.borrow_mut().push(item);
        return;
    }
    let items = Rc::new(RefCell::new(vec![item]));
    GROUPS.with(|g| g.borrow_mut().push((key, Rc::clone(&items) as Rc<dyn Any>)));
    at_end(move || {
        GROUPS.with(|g| g.borrow_mut().retain(|(k, _)| *k != key));
        let items = std::mem::take(&mut *items.borrow_mut());
        flush(items);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn deferred_work_runs_when_the_outermost_scope_ends() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        scope(|| {
            let l2 = l.clone();
            at_end(move || l2.borrow_mut().push("a"));
            scope(|| {
                let l3 = l.clone();
                at_end(move || l3.borrow_mut().push("b"));
            });
            l.borrow_mut().push("body");
        });
        assert_eq!(*log.borrow(), vec!["body", "a", "b"]);
        assert!(!in_scope());
    }

    #[test]
    fn without_a_scope_work_runs_at_once() {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        at_end(move || r.set(true));
        assert!(ran.get());
    }

    #[test]
    fn hooks_that_defer_again_are_run_too() {
        let n = Rc::new(Cell::new(0));
        let n2 = n.clone();
        scope(|| {
            at_end(move || {
                n2.set(n2.get() + 1);
                let n3 = n2.clone();
                at_end(move || n3.set(n3.get() + 10));
            })
        });
        assert_eq!(n.get(), 11);
    }

    #[test]
    fn a_panicking_scope_does_not_leave_the_thread_inside_it() {
        let r = std::panic::catch_unwind(|| {
            scope(|| {
                defer_grouped(7, 1u32, |_| {});
                panic!("boom")
            })
        });
        assert!(r.is_err());
        assert!(!in_scope());
        // What the panicking scope deferred is gone; a new group under the same key flushes.
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        scope(|| defer_grouped(7, 2u32, move |v| g.borrow_mut().extend(v)));
        assert_eq!(*got.borrow(), vec![2]);
    }

    #[test]
    fn grouped_items_flush_once_per_key_in_order() {
        type Flushed = Vec<(usize, Vec<u32>)>;
        let got: Rc<RefCell<Flushed>> = Rc::default();
        let push = |key: usize, item: u32| {
            let g = got.clone();
            defer_grouped(key, item, move |v| g.borrow_mut().push((key, v)));
        };
        scope(|| {
            push(1, 10);
            push(2, 20);
            push(1, 11);
            scope(|| push(1, 12));
            assert!(got.borrow().is_empty());
        });
        assert_eq!(*got.borrow(), vec![(1, vec![10, 11, 12]), (2, vec![20])]);
        // Outside a scope: at once, alone.
        push(3, 30);
        assert_eq!(got.borrow().last(), Some(&(3, vec![30])));
    }
}
