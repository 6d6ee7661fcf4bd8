//! `errand serve` and `errand worker`: the long-running processes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use errand::config::Settings;
use errand::url::StoreUrl;
use errand::{ClaimFilter, Store, SystemClock, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    StoreUrl::parse(&settings.store)?
        .open(Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot open the store {}", settings.store))
}

/// Opens the store for a long-running process: a store that cannot be
/// reached yet (a database starting beside errand, a network blip) is
/// tried again with backoff for `store_unavailable_limit_secs`, as a
/// running worker does when it loses its store. A bad URL, or a schema
/// newer than this errand, fails at once.
async fn open_store_patiently(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn Store>> {
    let url = StoreUrl::parse(&settings.store)?;
    let limit = Duration::from_secs(settings.worker.store_unavailable_limit_secs);
    let give_up = tokio::time::Instant::now() + limit;
    let mut wait = Duration::from_millis(100);
    loop {
        match url.open(Arc::new(SystemClock)).await {
            Ok(store) => return Ok(store),
            Err(errand::Error::Store(err))
                if err.is_transient() && tokio::time::Instant::now() + wait < give_up =>
            {
                tracing::warn!(error = %err, retry_in = ?wait, "cannot reach the store yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => anyhow::bail!("stopped while waiting for the store {}", settings.store),
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!(
                    "cannot open the store {} (tried for up to {limit:?})",
                    settings.store
                )))
            }
        }
    }
}

fn worker_config(settings: &Settings) -> WorkerConfig {
    let worker = &settings.worker;
    let mut config = WorkerConfig {
        queues: worker.queues.clone(),
        max_tasks: worker.max_tasks,
        claim_ahead: worker.claim_ahead,
        claim_filter: if worker.claim_unknown {
            ClaimFilter::All
        } else {
            ClaimFilter::Registered
        },
        heartbeat_interval: Duration::from_millis(worker.heartbeat_ms),
        lease: Duration::from_millis(worker.lease_ms),
        poll_interval: Duration::from_millis(worker.poll_ms),
        reap_interval: Duration::from_millis(worker.heartbeat_ms),
        shutdown_timeout: Duration::from_secs(worker.shutdown_timeout_secs),
        store_unavailable_limit: Duration::from_secs(worker.store_unavailable_limit_secs),
        ..WorkerConfig::default()
    };
    if let Some(id) = &worker.worker_id {
        config.worker_id = id.clone();
    }
    config
}

/// The retention settings, checked: each a number of seconds, 0 for never.
fn retention(
    settings: &errand::config::RetentionSettings,
) -> anyhow::Result<errand_server::Retention> {
    let age = |name: &str, secs: f64| -> anyhow::Result<Option<Duration>> {
        if secs == 0.0 {
            return Ok(None);
        }
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|_| secs <= errand_core::MAX_SPAN_SECS)
            .map(Some)
            .with_context(|| {
                format!("retention.{name} must be a number of seconds from 0 (keep for ever) to 315576000, got {secs}")
            })
    };
    Ok(errand_server::Retention {
        completed: age("completed_after_secs", settings.completed_after_secs)?,
        canceled: age("canceled_after_secs", settings.canceled_after_secs)?,
        failed: age("failed_after_secs", settings.failed_after_secs)?,
        interval: age("interval_secs", settings.interval_secs)?
            .context("retention.interval_secs must be more than 0")?,
    })
}

fn webhooks(
    settings: &errand::config::WebhookSettings,
) -> anyhow::Result<errand_server::webhooks::WebhookConfig> {
    let secs = |name: &str, secs: f64| -> anyhow::Result<Duration> {
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero() && secs <= errand_core::MAX_SPAN_SECS)
            .with_context(|| {
                format!(
                    "webhooks.{name} must be a number of seconds from 0 to 315576000, got {secs}"
                )
            })
    };
    if settings.secret.as_deref() == Some("") {
        anyhow::bail!("webhooks.secret must not be empty");
    }
    if settings.max_attempts == 0 {
        anyhow::bail!("webhooks.max_attempts must be at least 1");
    }
    let allow = errand_core::WebhookAllowList::parse(&settings.allow)
        .map_err(|err| anyhow::anyhow!("webhooks.allow: {err}"))?;
    let config = errand_server::webhooks::WebhookConfig {
        secret: settings.secret.clone(),
        allow,
        policy: errand_core::DeliveryPolicy {
            max_attempts: settings.max_attempts,
            first_wait: secs("first_retry_secs", settings.first_retry_secs)?,
            max_wait: secs("max_retry_secs", settings.max_retry_secs)?,
        },
        timeout: secs("timeout_secs", settings.timeout_secs)?,
        commands: settings.commands.clone(),
    };
    for (command, webhook) in &config.commands {
        config
            .for_submit(command, Some(webhook.clone()))
            .map_err(|err| anyhow::anyhow!("[webhooks.commands.\"{command}\"] url {err}"))?;
    }
    Ok(config)
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Bad configuration is reported before anything starts.
    let registry = (!settings.serve.no_worker)
        .then(|| settings.registry())
        .transpose()?;
    let signaled = CancellationToken::new();
    tokio::spawn(stop_on_signal(signaled.clone()));
    let store = open_store_patiently(&settings, &signaled).await?;
    let serve = &settings.serve;
    let seconds = |name: &str, secs: f64| {
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| format!("serve.{name} must be a number of seconds > 0, got {secs}"))
    };
    let open_files = errand_server::raise_open_file_limit();
    let config = errand_server::ServerConfig {
        api_token: settings.api_token.clone(),
        worker_token: settings.worker_token.clone(),
        worker_lease: seconds("worker_lease_secs", serve.worker_lease_secs)
            .ok()
            .filter(|lease| (1..=3600).contains(&lease.as_secs()))
            .context("serve.worker_lease_secs must be from 1 to 3600")?,
        body_limit: serve.body_limit,
        cors_origins: serve.cors_origins.clone(),
        connections: errand_server::ConnectionLimits {
            max_connections: errand_server::connections_for(open_files, serve.max_connections),
            header_timeout: seconds("header_timeout_secs", serve.header_timeout_secs)?,
            idle_timeout: seconds("idle_timeout_secs", serve.idle_timeout_secs)?,
        },
        body_timeout: seconds("body_timeout_secs", serve.body_timeout_secs)?,
        max_wait: seconds("max_wait_secs", serve.max_wait_secs)?,
        retention: retention(&settings.retention)?,
        webhooks: webhooks(&settings.webhooks)?,
        ..errand_server::ServerConfig::default()
    };
    let state = errand_server::AppState::new(store.clone(), config);
    // Before the in-process worker claims anything.
    for (command, limit) in &settings.limits {
        errand_server::limits::set_limit(&state, command, limit.clone())
            .await
            .map_err(|err| anyhow::anyhow!("[limits.\"{command}\"] in the configuration: {err}"))?;
    }
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        signaled.cancelled().await;
        shutdown.cancel();
    });
    let worker_shutdown = CancellationToken::new();
    let mut worker = None;
    if let Some(registry) = registry {
        let in_process = Worker::new(store, registry, worker_config(&settings));
        // Published before the first request, so submits of its commands
        // are accepted from the start.
        in_process.register().await?;
        worker = Some(tokio::spawn(in_process.run(worker_shutdown.clone())));
    }
    // After the in-process worker published its commands: a schedule of
    // one of them is checked against its schema now.
    for (name, schedule) in &settings.schedules {
        use errand_server::schedules::{put_schedule, CheckCommand};
        put_schedule(&state, name, schedule.clone(), CheckCommand::IfKnown)
            .await
            .map_err(|err| anyhow::anyhow!("[schedules.{name}] in the configuration: {err}"))?;
    }
    let bind = &settings.serve.bind;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    tracing::info!(
        address = %listener.local_addr()?,
        store = %settings.store,
        worker = !settings.serve.no_worker,
        auth = state.config.api_token.is_some(),
        "errand is serving on http://{}/api", listener.local_addr()?
    );
    let shutdown = state.shutdown.clone();
    let mut server = tokio::spawn(errand_server::serve(listener, state));
    let Some(mut worker) = worker else {
        return Ok(server.await??);
    };
    tokio::select! {
        served = &mut server => {
            served??;
            // Responses are finished; now let the worker drain.
            worker_shutdown.cancel();
            worker.await??;
            Ok(())
        }
        stopped = &mut worker => {
            // The worker gave up (its store was unreachable too long): do
            // not go on serving without it; exit non-zero for a restart.
            shutdown.cancel();
            let _ = server.await;
            stopped??;
            anyhow::bail!("the in-process worker stopped")
        }
    }
}

pub async fn worker(settings: Settings) -> anyhow::Result<()> {
    let registry = settings.registry()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let store = open_store_patiently(&settings, &shutdown).await?;
    Worker::new(store, registry, worker_config(&settings))
        .run(shutdown)
        .await?;
    Ok(())
}

/// Fires `shutdown` on the first SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
