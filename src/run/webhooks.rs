//! Webhooks (`notify`): every event (or the kinds a webhook lists) is POSTed as the live feed's
//! event message, signed with HMAC-SHA256 when the webhook has a secret.
//!
//! The sink only queues (bounded, never blocking the executor); one task per webhook delivers
//! in order, with a timeout per attempt and a bounded number of retries with backoff. Each
//! delivery's outcome comes back into the event stream as a `webhook_delivery` event, so the
//! manifest records it; those events are never themselves delivered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify as Wake;

use super::events::{Envelope, RunEvent};
use super::hub::{HubHandle, Sink};
use super::state::RunState;
use crate::manifest::{DeliveryRecord, Event, Timestamp};
use crate::scenario::{Notify, Secret};

/// Events waiting per webhook; beyond this the oldest is dropped (and recorded as dropped).
pub const QUEUE: usize = 256;

/// Delivery settings (the tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub timeout: Duration,
    /// Attempts per event, the first included.
    pub attempts: u32,
    /// Wait before retry n is `backoff * 2^(n-1)`.
    pub backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timeout: Duration::from_secs(5),
            attempts: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

/// `scheme://host:port` of a URL: what logs and the manifest may show (the path and query of
/// a webhook URL often are its credential).
pub fn target_of(url: &reqwest::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or("?"),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

/// The signature header's value for `body`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The body of a delivery: the live feed's event message.
pub fn body(env: &Envelope) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "event",
        "seq": env.seq,
        "event": env.event,
    }))
    .expect("events serialize")
}

struct Queue {
    items: std::sync::Mutex<VecDeque<Arc<Envelope>>>,
    wake: Wake,
    /// Queued plus in flight (for settling at the end of a run).
    pending: AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

/// One webhook's subscriber.
pub struct WebhookSink {
    index: u32,
    filter: Option<Vec<String>>,
    queue: Arc<Queue>,
    hub: HubHandle,
    target: String,
}

impl WebhookSink {
    /// Start delivering to `hook` (index `index` in `notify`). Must run inside the runtime.
    pub fn start(
        index: u32,
        hook: &Notify,
        hub: HubHandle,
        policy: Policy,
    ) -> Result<WebhookSink, String> {
        let url = reqwest::Url::parse(hook.url.expose())
            .map_err(|e| format!("notify[{index}].url is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("notify[{index}].url must be http:// or https://"));
        }
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("oa-run/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the webhook client: {e}"))?;
        let queue = Arc::new(Queue {
            items: std::sync::Mutex::new(VecDeque::new()),
            wake: Wake::new(),
            pending: AtomicUsize::new(0),
            closed: Default::default(),
        });
        let target = target_of(&url);
        let worker = Worker {
            index,
            url,
            target: target.clone(),
            secret: hook.secret.clone(),
            client,
            policy,
            queue: queue.clone(),
            hub: hub.clone(),
        };
        tokio::spawn(worker.run());
        Ok(WebhookSink {
            index,
            filter: hook.events.clone(),
            queue,
            hub,
            target,
        })
    }

    fn wanted(&self, ev: &RunEvent) -> bool {
        if matches!(ev, RunEvent::WebhookDelivery { .. }) {
            return false;
        }
        self.filter
            .as_ref()
            .is_none_or(|f| f.iter().any(|k| k == ev.kind()))
    }
}

impl Sink for WebhookSink {
    fn on_event(
        &mut self,
        env: &Envelope,
        _logged: Option<&Event>,
        _state: &RunState,
    ) -> Result<(), crate::Error> {
        if !self.wanted(&env.event) {
            return Ok(());
        }
        let dropped = {
            let mut q = self.queue.items.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = if q.len() >= QUEUE {
                q.pop_front()
            } else {
                self.queue.pending.fetch_add(1, Ordering::SeqCst);
                None
            };
            q.push_back(Arc::new(env.clone()));
            dropped
        };
        self.queue.wake.notify_one();
        if let Some(old) = dropped {
            self.hub.inject(RunEvent::WebhookDelivery {
                record: DeliveryRecord {
                    webhook: self.index,
                    target: self.target.clone(),
                    delivery: uuid::Uuid::new_v4().to_string(),
                    seq: old.seq,
                    event: old.event.kind().into(),
                    ok: false,
                    attempts: 0,
                    status: None,
                    error: Some(format!(
                        "dropped unsent: more than {QUEUE} events were waiting for this webhook"
                    )),
                    at: Timestamp::now(),
                },
            });
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.queue.pending.load(Ordering::SeqCst)
    }

    fn finish(&mut self) {
        self.queue.closed.store(true, Ordering::SeqCst);
        self.queue.wake.notify_one();
    }
}

struct Worker {
    index: u32,
    url: reqwest::Url,
    target: String,
    secret: Option<Secret>,
    client: reqwest::Client,
    policy: Policy,
    queue: Arc<Queue>,
    hub: HubHandle,
}

impl Worker {
    async fn run(self) {
        loop {
            let next = self
                .queue
                .items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            match next {
                Some(env) => {
                    let record = self.deliver(&env).await;
                    if !record.ok {
                        tracing::warn!(
                            "webhook {} ({}): {} not delivered: {}",
                            self.index,
                            self.target,
                            record.event,
                            record.error.as_deref().unwrap_or("?")
                        );
                    }
                    self.hub.inject(RunEvent::WebhookDelivery { record });
                    // After the report is queued, so a settled run has folded it in.
                    self.queue.pending.fetch_sub(1, Ordering::SeqCst);
                }
                None if self.queue.closed.load(Ordering::SeqCst) => return,
                None => self.queue.wake.notified().await,
            }
        }
    }

    async fn deliver(&self, env: &Envelope) -> DeliveryRecord {
        let body = body(env);
        let delivery = uuid::Uuid::new_v4().to_string();
        let sig = self.secret.as_ref().map(|s| signature(s, &body));
        let mut attempts = 0;
        let mut status = None;
        let mut error = None;
        let mut ok = false;
        while attempts < self.policy.attempts {
            if attempts > 0 {
                let wait = self.policy.backoff * 2u32.saturating_pow(attempts - 1);
                tokio::time::sleep(wait).await;
            }
            attempts += 1;
            let mut req = self
                .client
                .post(self.url.clone())
                .header("content-type", "application/json")
                .header("x-oa-run-event", env.event.kind())
                .header("x-oa-run-delivery", &delivery)
                .body(body.clone());
            if let Some(sig) = &sig {
                req = req.header("x-oa-run-signature", sig);
            }
            match req.send().await {
                Ok(r) => {
                    status = Some(r.status().as_u16());
                    if r.status().is_success() {
                        ok = true;
                        error = None;
                        break;
                    }
                    error = Some(format!("HTTP {}", r.status()));
                    // A client error will not change on retry (except rate limiting).
                    if r.status().is_client_error() && r.status().as_u16() != 429 {
                        break;
                    }
                }
                // reqwest's error text may carry the URL: keep the kind only.
                Err(e) => {
                    status = None;
                    error = Some(
                        if e.is_timeout() {
                            "timed out"
                        } else if e.is_connect() {
                            "could not connect"
                        } else {
                            "request failed"
                        }
                        .to_string(),
                    );
                }
            }
        }
        DeliveryRecord {
            webhook: self.index,
            target: self.target.clone(),
            delivery,
            seq: env.seq,
            event: env.event.kind().into(),
            ok,
            attempts,
            status,
            error,
            at: Timestamp::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac_sha256_vector() {
        // RFC 4231 test case 2.
        let s = signature(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn target_leaves_out_path_and_query() {
        let u =
            reqwest::Url::parse("https://hooks.example:8443/services/T0/B0/SECRET?x=1").unwrap();
        assert_eq!(target_of(&u), "https://hooks.example:8443");
    }
}
