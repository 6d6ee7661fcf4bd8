//! Store administration and the CLI's own helpers: prune, migrate, config,
//! completions.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use errand::config::Settings;
use errand::url::StoreUrl;
use errand::SystemClock;

pub async fn prune(settings: &Settings, older_than: Duration) -> anyhow::Result<()> {
    let store = crate::run::open_store(settings).await?;
    let before = store.clock().now().minus(older_than);
    let deleted = store.prune(before).await.context("pruning finished jobs")?;
    println!(
        "deleted {deleted} finished jobs (and their events) that ended before {}",
        before.to_rfc3339()
    );
    Ok(())
}

/// Opening a store applies its migrations (under a lock on PostgreSQL);
/// this does only that, for deploys that migrate before they roll out.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let url = StoreUrl::parse(&settings.store)?;
    url.open(Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot migrate {}", settings.store))?;
    println!(
        "the store is at schema version {} (this errand's newest)",
        url.schema_version()
    );
    Ok(())
}

pub fn print_config(settings: &Settings) {
    print!("{}", settings.redacted_toml());
}

pub fn completions(shell: clap_complete::Shell, command: &mut clap::Command) {
    clap_complete::generate(shell, command, "errand", &mut std::io::stdout());
}
