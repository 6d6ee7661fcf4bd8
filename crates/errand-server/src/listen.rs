//! Accepting connections so that slow or idle clients cannot starve the
//! others: a bounded number of connections, a deadline for each request's
//! headers, a watchdog that closes a connection with no request in
//! progress (never used: after the header timeout; kept alive: after the
//! idle timeout), and accept errors (out of file descriptors) that pause
//! instead of spin.
//!
//! `axum::serve` has none of these knobs, so connections are served with
//! hyper-util's builder directly, the way axum's own examples do.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How connections are accepted and bounded.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most; past it, new ones wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
    /// A connection's first request, and each request's headers, must
    /// arrive within this.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after
    /// this long.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What a connection is doing, for the watchdog that closes idle ones.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request ended; none yet.
    last_ended_ms: AtomicU64,
    served: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ended_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
        }
    }

    fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
    }

    fn ended(&self) {
        let at = self.opened.elapsed().as_millis() as u64;
        self.last_ended_ms.store(at, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// No request in progress for longer than the limit that applies: the
    /// header timeout before the first request, the idle timeout after.
    fn idle_too_long(&self, limits: &ConnectionLimits) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let (since_ms, limit) = if self.served.load(Ordering::Acquire) {
            (
                self.last_ended_ms.load(Ordering::Acquire),
                limits.idle_timeout,
            )
        } else {
            (0, limits.header_timeout)
        };
        let idle = self
            .opened
            .elapsed()
            .saturating_sub(Duration::from_millis(since_ms));
        idle > limit
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then stops
/// accepting and waits for the open connections to finish.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: the connections we hold must close
                    // first; retrying at once would spin.
                    tracing::warn!(error = %err, "cannot accept a connection; pausing");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = {
            let (router, activity) = (router.clone(), activity.clone());
            tower::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(address));
                activity.started();
                let (router, activity) = (router.clone(), activity.clone());
                async move {
                    let response = router.oneshot(request).await;
                    activity.ended();
                    response
                }
            })
        };
        let (builder, limits, shutdown) = (builder.clone(), limits.clone(), shutdown.clone());
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            let mut connection = std::pin::pin!(connection);
            let mut watch = tokio::time::interval(WATCH_EVERY);
            let mut closing = false;
            loop {
                tokio::select! {
                    // A client that vanishes or times out is not the server's error.
                    _ = connection.as_mut() => break,
                    _ = watch.tick(), if !closing => {
                        if activity.idle_too_long(&limits) {
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                    () = shutdown.cancelled(), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// How often a connection checks whether it has been idle too long.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Raises this process's open-file limit to what it may (the hard
/// limit), so that connections, not the default 1,024 descriptors, are
/// what bounds a busy server. Returns the limit in force.
#[cfg(unix)]
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

/// The connection limit that fits `open_files` descriptors, keeping room
/// for the store, the log and the worker's programs.
pub fn connections_for(open_files: Option<u64>, wanted: usize) -> usize {
    match open_files {
        Some(limit) => {
            let reserve = (limit / 4).min(256);
            wanted.min(limit.saturating_sub(reserve).max(16) as usize)
        }
        None => wanted,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connections_leave_room_for_other_files() {
        assert_eq!(super::connections_for(Some(1024), 4096), 768);
        assert_eq!(super::connections_for(Some(256), 4096), 192);
        assert_eq!(super::connections_for(Some(1 << 20), 4096), 4096);
        assert_eq!(super::connections_for(None, 100), 100);
    }
}
