//! Ctrl-C and SIGTERM.
//!
//! The first SIGINT/SIGTERM asks for a clean stop: [`Shutdown::requested`] completes, and the
//! executor stops every recording (waiting for the files to be final), removes the tc tree,
//! stops a launched server, marks the manifest `interrupted` and exits 130. A second signal
//! means "now": the registered force-exit hooks run (synchronously, newest first, within a
//! time budget) and the process exits 130 at once.
//!
//! The signals are received on a dedicated thread with its own small runtime, so the second
//! Ctrl-C works even when the executor's runtime is stuck.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::error::exit;

/// How long the force-exit hooks may take together after a second signal.
pub const DEFAULT_HOOK_BUDGET: Duration = Duration::from_secs(5);

/// The signal that asked for the stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot install the Ctrl-C/SIGTERM handler: {0}")]
    Install(#[source] std::io::Error),
    #[error("the Ctrl-C/SIGTERM handler thread did not start")]
    NoListener,
}

impl From<SignalError> for crate::Error {
    fn from(e: SignalError) -> Self {
        crate::Error::Internal(e.to_string())
    }
}

type Hook = Box<dyn FnOnce() + Send + 'static>;

struct Inner {
    tx: watch::Sender<Option<Signal>>,
    /// OS signals received so far.
    received: AtomicU32,
    hooks: Mutex<Vec<(u64, Hook)>>,
    next_id: AtomicU64,
    hook_budget: Duration,
}

/// A handle on the stop request; clone it freely.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("requested", &self.signal())
            .field(
                "signals_received",
                &self.inner.received.load(Ordering::SeqCst),
            )
            .finish()
    }
}

static INSTALLED: Mutex<Option<Shutdown>> = Mutex::new(None);

impl Shutdown {
    /// Install the process-wide SIGINT/SIGTERM handling (once; later calls return the same
    /// handle). From then on the default action (die at once) no longer applies.
    pub fn install() -> Result<Shutdown, SignalError> {
        Self::install_with_budget(DEFAULT_HOOK_BUDGET)
    }

    /// [`Shutdown::install`] with the time the force-exit hooks may take (the first
    /// installation decides).
    pub fn install_with_budget(hook_budget: Duration) -> Result<Shutdown, SignalError> {
        let mut slot = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = Shutdown::with_budget(hook_budget);
        spawn_listener(Arc::clone(&s.inner))?;
        *slot = Some(s.clone());
        Ok(s)
    }

    /// A handle without OS signal handling: only [`Shutdown::request`] triggers it (tests, or
    /// embedding oa-run in a program with its own signal handling).
    pub fn manual() -> Shutdown {
        Shutdown::with_budget(DEFAULT_HOOK_BUDGET)
    }

    fn with_budget(hook_budget: Duration) -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                tx: watch::Sender::new(None),
                received: AtomicU32::new(0),
                hooks: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(0),
                hook_budget,
            }),
        }
    }

    /// Ask for a clean stop, as a first signal would (never exits the process).
    pub fn request(&self, signal: Signal) {
        self.inner.tx.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(signal);
                true
            } else {
                false
            }
        });
    }

    pub fn is_requested(&self) -> bool {
        self.inner.tx.borrow().is_some()
    }

    /// The signal that asked for the stop, if any.
    pub fn signal(&self) -> Option<Signal> {
        *self.inner.tx.borrow()
    }

    /// Completes when a stop is requested (at once if it already was). Cancel-safe: use it
    /// in `tokio::select!` around every wait.
    pub async fn requested(&self) -> Signal {
        let mut rx = self.inner.tx.subscribe();
        loop {
            if let Some(s) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; this cannot happen, but never spin.
                std::future::pending::<()>().await;
            }
        }
    }

    /// `Err(Error::Interrupted)` once a stop was requested: `shutdown.check()?` between steps.
    pub fn check(&self) -> Result<(), crate::Error> {
        if self.is_requested() {
            Err(crate::Error::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Register a synchronous, best-effort cleanup for a second signal (e.g. SIGKILL the
    /// server's process group, send StopRecord without waiting, `tc qdisc del`). Hooks run
    /// newest first on a helper thread; after the budget the process exits regardless.
    /// Dropping the guard unregisters the hook (its work was done the clean way).
    pub fn on_force_exit(&self, hook: impl FnOnce() + Send + 'static) -> HookGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, Box::new(hook)));
        HookGuard {
            inner: Arc::downgrade(&self.inner),
            id,
        }
    }

    /// Number of hooks registered now.
    pub fn hook_count(&self) -> usize {
        self.inner
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Inner {
    fn on_signal(&self, sig: Signal) {
        let n = self.received.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            warn!(
                "{sig} received: stopping cleanly (recordings, latency, server); \
                 press Ctrl-C again to exit at once"
            );
            self.tx.send_if_modified(|cur| {
                if cur.is_none() {
                    *cur = Some(sig);
                    true
                } else {
                    false
                }
            });
        } else {
            warn!("second signal ({sig}): exiting now after a best-effort cleanup");
            self.run_hooks();
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    }

    /// Run every registered hook, newest first, on a helper thread; give up after the budget.
    fn run_hooks(&self) {
        let mut hooks =
            std::mem::take(&mut *self.hooks.lock().unwrap_or_else(PoisonError::into_inner));
        if hooks.is_empty() {
            return;
        }
        hooks.reverse();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("oa-run-force-cleanup".into())
            .spawn(move || {
                for (_, hook) in hooks {
                    // One failing hook must not stop the others.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(hook));
                }
                let _ = done_tx.send(());
            });
        if spawned.is_ok() && done_rx.recv_timeout(self.hook_budget).is_err() {
            warn!(
                "cleanup did not finish within {:?}; exiting anyway",
                self.hook_budget
            );
        }
    }
}

/// Keeps a force-exit hook registered; dropping it unregisters the hook.
#[must_use = "dropping the guard unregisters the hook at once"]
pub struct HookGuard {
    inner: Weak<Inner>,
    id: u64,
}

impl HookGuard {
    /// Keep the hook for the rest of the process.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner
                .hooks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|(id, _)| *id != self.id);
        }
    }
}

impl std::fmt::Debug for HookGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookGuard").field("id", &self.id).finish()
    }
}

/// Receive SIGINT/SIGTERM on a dedicated thread. Returns once the handlers are in place, so a
/// signal arriving right after `install` is never handled by the default action.
fn spawn_listener(inner: Arc<Inner>) -> Result<(), SignalError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    std::thread::Builder::new()
        .name("oa-run-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let streams = signal(SignalKind::interrupt())
                    .and_then(|i| signal(SignalKind::terminate()).map(|t| (i, t)));
                let (mut int, mut term) = match streams {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                loop {
                    let sig = tokio::select! {
                        Some(()) = int.recv() => Signal::Interrupt,
                        Some(()) = term.recv() => Signal::Terminate,
                        else => return,
                    };
                    inner.on_signal(sig);
                }
            });
        })
        .map_err(SignalError::Install)?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SignalError::Install(e)),
        Err(_) => Err(SignalError::NoListener),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn request_completes_waiters_once() {
        let s = Shutdown::manual();
        assert!(!s.is_requested());
        assert!(s.check().is_ok());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.requested().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        s.request(Signal::Terminate);
        s.request(Signal::Interrupt); // the first reason stays
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Signal::Terminate);
        assert_eq!(s.signal(), Some(Signal::Terminate));
        // Already requested: completes at once.
        assert_eq!(s.requested().await, Signal::Terminate);
        assert_eq!(s.check().unwrap_err().exit_code(), 130);
    }

    #[test]
    fn hooks_run_newest_first_and_dropped_guards_unregister() {
        let s = Shutdown::manual();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mk = |n: u32| {
            let order = Arc::clone(&order);
            move || order.lock().unwrap().push(n)
        };
        s.on_force_exit(mk(1)).keep();
        let dropped = s.on_force_exit(mk(2));
        s.on_force_exit(|| panic!("a failing hook")).keep();
        let _g3 = s.on_force_exit(mk(3));
        drop(dropped);
        assert_eq!(s.hook_count(), 3);
        s.inner.run_hooks();
        assert_eq!(*order.lock().unwrap(), vec![3, 1]);
        assert_eq!(s.hook_count(), 0);
    }

    #[test]
    fn hook_budget_bounds_a_hanging_hook() {
        let s = Shutdown::with_budget(Duration::from_millis(200));
        let ran = Arc::new(AtomicBool::new(false));
        s.on_force_exit({
            let ran = Arc::clone(&ran);
            move || ran.store(true, Ordering::SeqCst)
        })
        .keep();
        s.on_force_exit(|| std::thread::sleep(Duration::from_secs(30)))
            .keep();
        let t = std::time::Instant::now();
        s.inner.run_hooks();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // Newest first: the hanging hook blocks the older one; the budget still returns.
        assert!(!ran.load(Ordering::SeqCst));
    }
}
