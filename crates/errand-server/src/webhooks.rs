//! Webhook delivery: every server queues the deliveries its store's new
//! events call for (once in a cluster: the store moves one cursor), takes
//! the due ones for a lease, and sends each as a signed POST. Sending runs
//! beside the API and the workers; a slow or dead receiver delays nothing
//! but its own deliveries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use errand_core::webhook::{decide_delivery, sign, SIGNATURE_HEADER};
use errand_core::{DeliveryPolicy, DeliveryState, Webhook, WebhookAllowList, WebhookRefused};
use errand_store::{DeliveryAttempt, StoreError, TakeDeliveries, WebhookDelivery};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use crate::state::AppState;

/// Deliveries in flight per server at most.
const MAX_IN_FLIGHT: usize = 16;
/// How long a burst of events gathers before the scan that queues its
/// deliveries: at most one scan per pause however busy the store is.
const SCAN_PAUSE: Duration = Duration::from_millis(50);
/// How often a server looks for deliveries due again (retries, and those
/// of a sender that died) with no event to wake it.
const DUE_POLL: Duration = Duration::from_secs(1);

/// What a server needs to send webhooks.
#[derive(Clone, Debug, Default)]
pub struct WebhookConfig {
    /// Signs every request. Without it a job cannot carry a webhook, and
    /// the server sends none.
    pub secret: Option<String>,
    /// The destinations a webhook may name.
    pub allow: WebhookAllowList,
    pub policy: DeliveryPolicy,
    /// How long a receiver may take to answer.
    pub timeout: Duration,
    /// The webhook a command's jobs get when their submit names none, by
    /// full name (`app.name`).
    pub commands: BTreeMap<String, Webhook>,
}

impl WebhookConfig {
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// The webhook a submit ends up with (its own, else its command's),
    /// checked: this server must be able to send it.
    pub fn for_submit(
        &self,
        command: &str,
        asked: Option<Webhook>,
    ) -> Result<Option<Webhook>, WebhookRefused> {
        let Some(webhook) = asked.or_else(|| self.commands.get(command).cloned()) else {
            return Ok(None);
        };
        if !self.enabled() {
            return Err(WebhookRefused::NotConfigured);
        }
        self.allow.check(&webhook.url)?;
        Ok(Some(webhook))
    }
}

/// This server's name as a sender: unique among the servers sharing a
/// database, so that one's late record cannot pass for another's.
pub fn sender_id() -> String {
    format!(
        "server-{}-{}",
        std::process::id(),
        errand_core::JobId::generate().as_str()
    )
}

/// Queues, takes and sends deliveries until the server shuts down.
pub async fn deliver_webhooks(state: AppState, sender: String) {
    let config = &state.config.webhooks;
    let Some(secret) = config.secret.clone() else {
        return;
    };
    let client = match reqwest::Client::builder()
        // A redirect could lead past the allow-list.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .user_agent(concat!("errand/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "webhooks are off: no HTTP client");
            return;
        }
    };
    let sending = Arc::new(Sending {
        state: state.clone(),
        client,
        secret,
        sender,
    });
    let mut events = state.store.subscribe();
    let mut due = tokio::time::interval(DUE_POLL);
    due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    let mut listening = true;
    loop {
        let woken_by_event = tokio::select! {
            () = state.shutdown.cancelled() => break,
            _ = due.tick() => false,
            received = events.recv(), if listening => {
                // A closed feed is not listened to again (it would answer
                // at once, for ever); the poll goes on.
                listening = !matches!(received, Err(RecvError::Closed));
                listening
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => false,
        };
        if woken_by_event {
            // Many events come together: let a burst gather, then scan it
            // once, rather than once per event.
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                () = tokio::time::sleep(SCAN_PAUSE) => {}
            }
            while events.try_recv().is_ok() {}
        }
        if let Err(err) = state.store.queue_webhook_deliveries().await {
            tracing::warn!(error = %err, "could not queue webhook deliveries");
            continue;
        }
        let room = MAX_IN_FLIGHT - in_flight.len();
        if room == 0 {
            continue;
        }
        let take = TakeDeliveries {
            sender: sending.sender.clone(),
            // Time to send, and to record how it went.
            lease: config.timeout + Duration::from_secs(30),
            limit: room,
        };
        match state.store.take_webhook_deliveries(take).await {
            Ok(taken) => {
                for delivery in taken {
                    let sending = sending.clone();
                    in_flight.spawn(async move { sending.deliver(delivery).await });
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not take webhook deliveries"),
        }
    }
    // Deliveries cut off here are the lease's: another server (or this
    // one, restarted) sends them again once it ends.
    in_flight.abort_all();
}

struct Sending {
    state: AppState,
    client: reqwest::Client,
    secret: String,
    sender: String,
}

impl Sending {
    async fn deliver(&self, delivery: WebhookDelivery) {
        let config = &self.state.config.webhooks;
        let (state, http_status, error, retry_at) = match config.allow.check(&delivery.url) {
            // The allow-list changed since the job was submitted: no
            // attempt will ever go, so none is retried.
            Err(refused) => (
                DeliveryState::Failed,
                None,
                Some(format!("not sent: the webhook URL {refused}")),
                None,
            ),
            Ok(_) => {
                let (http_status, error) = self.send(&delivery).await;
                let now = self.state.store.clock().now();
                let (state, retry_at) =
                    decide_delivery(&config.policy, delivery.attempt, http_status, now);
                (state, http_status, error, retry_at)
            }
        };
        metrics::counter!("errand_webhook_deliveries_total", "state" => state.as_str())
            .increment(1);
        if state != DeliveryState::Delivered {
            tracing::warn!(
                delivery = delivery.delivery_id, job_id = %delivery.event.job_id,
                url = %delivery.url, attempt = delivery.attempt, ?http_status, ?error,
                "webhook delivery failed"
            );
        }
        let attempt = DeliveryAttempt {
            state,
            http_status,
            error,
            retry_at,
        };
        match self
            .state
            .store
            .record_webhook_attempt(&self.sender, &delivery, attempt)
            .await
        {
            Ok(()) => {}
            Err(StoreError::LeaseLost { .. }) => tracing::warn!(
                delivery = delivery.delivery_id,
                "a webhook attempt outlived its lease; another server sends it again"
            ),
            Err(err) => tracing::warn!(error = %err, "could not record a webhook attempt"),
        }
    }

    /// Sends one attempt: the receiver's status, or why there was none
    /// (and, for a non-2xx answer, the start of its body).
    async fn send(&self, delivery: &WebhookDelivery) -> (Option<u16>, Option<String>) {
        let job = self.state.store.get(&delivery.event.job_id).await.ok();
        let body = json!({
            "delivery_id": delivery.delivery_id,
            "attempt": delivery.attempt,
            "event": delivery.event,
            "job": job,
        });
        let body = serde_json::to_vec(&body).expect("events and jobs serialize");
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let request = self
            .client
            .post(&delivery.url)
            .header("content-type", "application/json")
            .header(
                SIGNATURE_HEADER,
                sign(self.secret.as_bytes(), timestamp, &body),
            )
            .header("errand-delivery", delivery.delivery_id.to_string())
            .header("errand-event", delivery.event.kind.as_str())
            .body(body);
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return (Some(status.as_u16()), None);
                }
                let text = response.text().await.unwrap_or_default();
                let said: String = text.chars().take(200).collect();
                (
                    Some(status.as_u16()),
                    Some(format!("the receiver answered {status}: {said}")),
                )
            }
            Err(err) => (None, Some(describe(&err))),
        }
    }
}

fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
