//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use errand_store::Store;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;

/// The server's settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// When set, every route but `/api/health` needs `Authorization: Bearer`.
    pub api_token: Option<String>,
    /// When set, the worker protocol (`/api/worker/...`) needs this token
    /// and no other; otherwise it takes the API token. The API token never
    /// opens it then, so a token given to browsers cannot claim jobs.
    pub worker_token: Option<String>,
    /// The lease a remote worker's claim gets when it asks for none.
    pub worker_lease: Duration,
    /// How often the server returns jobs of dead workers to the queue.
    pub reap_interval: Duration,
    /// How long ended jobs are kept, per status.
    pub retention: crate::Retention,
    /// How often a waiting claim looks for jobs with no event to wake it
    /// (a delayed job's time coming announces nothing).
    pub claim_poll_interval: Duration,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Deepest JSON nesting accepted in a body.
    pub max_json_depth: usize,
    /// Origins allowed by CORS; empty means CORS is off.
    pub cors_origins: Vec<String>,
    /// Comment lines on idle SSE streams, so proxies keep them open.
    pub sse_keepalive: Duration,
    /// The `retry:` hint sent to SSE clients.
    pub sse_retry: Duration,
    /// The longest `?wait=` a long poll may ask for.
    pub max_wait: Duration,
    /// Open SSE streams allowed per client address; more get 429.
    pub max_streams_per_client: usize,
    /// Connections at most, and how long a request's headers may take.
    pub connections: crate::ConnectionLimits,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
    /// Signing, allow-list and retries of webhooks.
    pub webhooks: crate::webhooks::WebhookConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_token: None,
            worker_token: None,
            worker_lease: Duration::from_secs(15),
            reap_interval: Duration::from_secs(1),
            claim_poll_interval: Duration::from_secs(1),
            retention: crate::Retention::default(),
            body_limit: 1024 * 1024,
            max_json_depth: 64,
            cors_origins: Vec::new(),
            sse_keepalive: Duration::from_secs(15),
            sse_retry: Duration::from_secs(3),
            max_wait: Duration::from_secs(300),
            max_streams_per_client: 64,
            connections: crate::ConnectionLimits::default(),
            body_timeout: Duration::from_secs(30),
            webhooks: crate::webhooks::WebhookConfig {
                timeout: Duration::from_secs(10),
                ..Default::default()
            },
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ServerConfig>,
    pub catalog: Arc<Catalog>,
    /// Fired on shutdown: ends SSE streams and long polls, so the server
    /// can finish its responses.
    pub shutdown: CancellationToken,
    /// Open SSE streams by client address.
    pub streams: Arc<StreamCounts>,
    /// Every job's events in id order, for `/api/events`.
    pub ordered: Arc<crate::feed::OrderedFeed>,
    /// Dashboard logins and the brake on wrong tokens.
    pub sessions: Arc<crate::session::Sessions>,
    /// Wakes this server's scheduler when a schedule is stored here.
    pub scheduler_wake: Arc<tokio::sync::Notify>,
    /// Signs and checks per-job read-only links.
    pub links: Arc<crate::links::LinkKey>,
}

/// Counts open SSE streams per client, to bound what one client can hold.
#[derive(Default)]
pub struct StreamCounts {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One open stream; dropping it gives the slot back.
pub struct StreamSlot {
    counts: Arc<StreamCounts>,
    client: std::net::IpAddr,
}

impl StreamCounts {
    pub fn open(self: &Arc<Self>, client: std::net::IpAddr, limit: usize) -> Option<StreamSlot> {
        let mut open = self.open.lock().expect("never poisoned");
        let count = open.entry(client).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            counts: self.clone(),
            client,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().expect("never poisoned");
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        Self {
            catalog: Arc::new(Catalog::new(store.clone())),
            links: Arc::new(crate::links::LinkKey::new(config.api_token.as_deref())),
            store,
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            streams: Arc::default(),
            ordered: Arc::default(),
            sessions: Arc::default(),
            scheduler_wake: Arc::default(),
        }
    }
}
