//! The event hub: the one place the executor's events go. It numbers each event, folds it into
//! the [`RunState`], hands it to the synchronous sinks (manifest writer, console and progress)
//! and broadcasts it to asynchronous subscribers (live feed, metrics, webhooks), keeping a
//! bounded ring of recent events for subscribers that reconnect.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use tokio::sync::broadcast;

use super::events::{Envelope, RunEvent};
use super::state::RunState;
use crate::manifest::{Event, ManifestWriter, Timestamp};

/// Events kept for subscribers that reconnect with `since=`.
pub const RING: usize = 4096;
/// Capacity of the broadcast channel; a subscriber further behind than this is told it lagged.
const CHANNEL: usize = 1024;

/// What an asynchronous subscriber reads events from.
pub type Receiver = broadcast::Receiver<Arc<Envelope>>;

/// A synchronous subscriber, called in order for every event with the state after it.
pub trait Sink: Send {
    fn on_event(
        &mut self,
        env: &Envelope,
        logged: Option<&Event>,
        state: &RunState,
    ) -> Result<(), crate::Error>;
    /// About once a second while the executor is alive (clocks, spinners).
    fn on_tick(&mut self, _state: &RunState) {}
    /// The run is over (after `RunFinished`).
    fn finish(&mut self) {}
    /// Work still queued (webhook deliveries), which the run waits for, within a bound.
    fn pending(&self) -> usize {
        0
    }
}

/// Events that asynchronous subscribers report back (webhook deliveries), folded in at the
/// executor's next event or tick. Bounded: a flood is dropped and counted, never buffered.
const INBOX: usize = 1024;

/// State and recent events under one lock, so a snapshot and its `seq` always agree.
pub struct Shared {
    pub state: RunState,
    pub ring: VecDeque<Arc<Envelope>>,
}

/// What asynchronous subscribers hold: the shared state, the channel and the watchdog.
#[derive(Clone)]
pub struct HubHandle {
    shared: Arc<RwLock<Shared>>,
    tx: broadcast::Sender<Arc<Envelope>>,
    /// Unix milliseconds of the executor's last tick.
    last_tick_ms: Arc<AtomicI64>,
    inbox: Arc<Mutex<VecDeque<RunEvent>>>,
}

impl HubHandle {
    pub fn read(&self) -> RwLockReadGuard<'_, Shared> {
        self.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribe, and take a consistent snapshot: every event after `snapshot.live.seq`
    /// arrives on the receiver.
    pub fn subscribe(&self) -> (RunState, Receiver) {
        let g = self.read();
        let rx = self.tx.subscribe();
        (g.state.clone(), rx)
    }

    /// The events after `since`, if the ring still holds all of them.
    pub fn since(&self, since: u64) -> Option<(Vec<Arc<Envelope>>, Receiver)> {
        let g = self.read();
        let last = g.state.live.seq;
        if since > last {
            return None;
        }
        let first = g.ring.front().map(|e| e.seq).unwrap_or(last + 1);
        if since + 1 < first && since < last {
            return None;
        }
        let missed = g.ring.iter().filter(|e| e.seq > since).cloned().collect();
        let rx = self.tx.subscribe();
        Some((missed, rx))
    }

    /// Report an event from outside the executor (folded in order at the next emit or tick).
    /// Returns false when the inbox is full and the event was dropped.
    pub fn inject(&self, event: RunEvent) -> bool {
        let mut q = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= INBOX {
            return false;
        }
        q.push_back(event);
        true
    }

    /// How long ago the executor last ticked.
    pub fn since_tick(&self) -> std::time::Duration {
        let now = Timestamp::now().0.timestamp_millis();
        let last = self.last_tick_ms.load(Ordering::Relaxed);
        std::time::Duration::from_millis((now - last).max(0) as u64)
    }
}

pub struct Hub {
    handle: HubHandle,
    sinks: Vec<Box<dyn Sink>>,
    error: Option<crate::Error>,
}

impl Hub {
    pub fn new(state: RunState, sinks: Vec<Box<dyn Sink>>) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL);
        Hub {
            handle: HubHandle {
                shared: Arc::new(RwLock::new(Shared {
                    state,
                    ring: VecDeque::with_capacity(64),
                })),
                tx,
                last_tick_ms: Arc::new(AtomicI64::new(Timestamp::now().0.timestamp_millis())),
                inbox: Arc::new(Mutex::new(VecDeque::new())),
            },
            sinks,
            error: None,
        }
    }

    pub fn handle(&self) -> HubHandle {
        self.handle.clone()
    }

    /// Add a subscriber (before the run's first event, so it misses nothing).
    pub fn add_sink(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    /// Record one event. Sink failures (a manifest that cannot be written) are kept for
    /// [`Hub::take_error`]; the event still reaches every other sink.
    pub fn emit(&mut self, event: RunEvent) {
        self.drain_inbox();
        self.publish(event);
    }

    fn drain_inbox(&mut self) {
        let queued: Vec<RunEvent> = self
            .handle
            .inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for e in queued {
            self.publish(e);
        }
    }

    fn publish(&mut self, event: RunEvent) {
        let mut g = self
            .handle
            .shared
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let env = Arc::new(Envelope {
            seq: g.state.live.seq + 1,
            at: Timestamp::now(),
            event,
        });
        let logged = g.state.apply(&env);
        if g.ring.len() == RING {
            g.ring.pop_front();
        }
        g.ring.push_back(env.clone());
        for s in &mut self.sinks {
            if let Err(e) = s.on_event(&env, logged.as_ref(), &g.state)
                && self.error.is_none()
            {
                self.error = Some(e);
            }
        }
        drop(g);
        // No subscriber is fine.
        let _ = self.handle.tx.send(env);
    }

    /// The executor is alive: refresh clocks and the watchdog.
    pub fn tick(&mut self) {
        self.drain_inbox();
        self.handle
            .last_tick_ms
            .store(Timestamp::now().0.timestamp_millis(), Ordering::Relaxed);
        let g = self.handle.read();
        for s in &mut self.sinks {
            s.on_tick(&g.state);
        }
    }

    /// The first sink error since the last call.
    pub fn take_error(&mut self) -> Result<(), crate::Error> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// After the last event: wait (at most `max`) for queued work such as webhook deliveries,
    /// folding in what they report, then finish every sink.
    pub async fn settle(&mut self, max: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            self.drain_inbox();
            let pending: usize = self.sinks.iter().map(|s| s.pending()).sum();
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        for s in &mut self.sinks {
            s.finish();
        }
    }

    pub fn state(&self) -> RunState {
        self.handle.read().state.clone()
    }
}

/// Writes `manifest.json` after every event, atomically, through a gate the forced-exit hook
/// can close (after which nothing the executor does can overwrite the hook's final status).
pub struct ManifestSink {
    writer: ManifestWriter,
    gate: Arc<Mutex<bool>>,
}

impl ManifestSink {
    pub fn new(writer: ManifestWriter, gate: Arc<Mutex<bool>>) -> Self {
        ManifestSink { writer, gate }
    }
}

impl Sink for ManifestSink {
    fn on_event(
        &mut self,
        env: &Envelope,
        _logged: Option<&Event>,
        state: &RunState,
    ) -> Result<(), crate::Error> {
        // Planned recordings are followed at once by their start: one write covers both.
        if matches!(env.event, RunEvent::RecordingPlanned { .. }) {
            return Ok(());
        }
        let closed = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return Ok(());
        }
        let mut m = state.manifest.clone();
        self.writer.write(&mut m).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(Arc<Mutex<Vec<u64>>>);
    impl Sink for Count {
        fn on_event(
            &mut self,
            env: &Envelope,
            _: Option<&Event>,
            st: &RunState,
        ) -> Result<(), crate::Error> {
            assert_eq!(
                st.live.seq, env.seq,
                "the sink sees the state after the event"
            );
            self.0.lock().unwrap().push(env.seq);
            Ok(())
        }
    }

    fn hub() -> (Hub, Arc<Mutex<Vec<u64>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let h = Hub::new(
            RunState::new(crate::run::state::tests::manifest()),
            vec![Box::new(Count(seen.clone()))],
        );
        (h, seen)
    }

    fn info(i: u32) -> RunEvent {
        RunEvent::Info {
            message: format!("m{i}"),
        }
    }

    #[test]
    fn numbers_events_and_feeds_sinks_in_order() {
        let (mut h, seen) = hub();
        let (_, mut rx) = h.handle().subscribe();
        for i in 0..3 {
            h.emit(info(i));
        }
        assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
        for want in 1..=3 {
            assert_eq!(rx.try_recv().unwrap().seq, want);
        }
    }

    #[test]
    fn since_returns_missed_events_or_none_when_gone() {
        let (mut h, _) = hub();
        for i in 0..(RING as u32 + 10) {
            h.emit(info(i));
        }
        let last = RING as u64 + 10;
        let (missed, _) = h.handle().since(last - 3).unwrap();
        assert_eq!(
            missed.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![last - 2, last - 1, last]
        );
        assert!(
            h.handle().since(1).is_none(),
            "events 2..=10 fell out of the ring"
        );
        assert!(
            h.handle().since(last + 5).is_none(),
            "a seq from the future"
        );
        assert!(h.handle().since(last).unwrap().0.is_empty());
    }
}
