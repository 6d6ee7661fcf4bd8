//! Webhook deliveries as the stores keep them: one per event a job's
//! webhook asks for, queued once in a cluster, taken by one sender at a
//! time, and recorded in the job's event log after each attempt.

use std::time::Duration;

use errand_core::{Change, DeliveryRecord, DeliveryState, JobEvent, JobStatus, Timestamp};

/// A delivery a sender took: the event to send and where.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookDelivery {
    /// Stable across attempts: receivers deduplicate on it.
    pub delivery_id: i64,
    pub url: String,
    /// This attempt's number, from 1. Recording the attempt is a
    /// compare-and-set on it (and on the sender).
    pub attempt: u32,
    pub event: JobEvent,
}

/// What one attempt came to, as the sender decided it with the core's
/// [`decide_delivery`](errand_core::webhook::decide_delivery).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryAttempt {
    pub state: DeliveryState,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// When the next attempt is due (for `Retrying`).
    pub retry_at: Option<Timestamp>,
}

/// Parameters of [`Store::take_webhook_deliveries`](crate::Store::take_webhook_deliveries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakeDeliveries {
    /// Who sends: only it may record the attempts it took.
    pub sender: String,
    /// How long the deliveries are the sender's: after that (a sender
    /// that died mid-request) another takes them again.
    pub lease: Duration,
    pub limit: usize,
}

impl DeliveryAttempt {
    /// The delivery's `state` column after this attempt: a retrying one is
    /// pending again.
    pub fn stored_state(&self) -> &'static str {
        match self.state {
            DeliveryState::Retrying => "pending",
            other => other.as_str(),
        }
    }

    /// The event a store appends to the job's log for this attempt, the
    /// job being in `status`.
    pub fn record(&self, delivery: &WebhookDelivery, status: JobStatus) -> Change {
        Change::Webhook(DeliveryRecord {
            status,
            delivery_id: delivery.delivery_id,
            event_id: delivery.event.id,
            url: delivery.url.clone(),
            attempt: delivery.attempt,
            state: self.state,
            http_status: self.http_status,
            error: self.error.clone(),
            retry_at: self.retry_at,
        })
    }
}
