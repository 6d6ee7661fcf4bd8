//! The commands workers published in the store, with their input schemas
//! compiled, so an API-only server validates input without linking any
//! handler.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use errand_store::{CommandInfo, Store, StoreError};
use serde_json::Value;
use tokio::time::Instant;

/// How long a compiled schema is trusted before the store is asked again
/// (a worker may have published a new version).
const FRESH_FOR: Duration = Duration::from_secs(10);

pub struct CompiledCommand {
    pub info: CommandInfo,
    validator: Option<jsonschema::Validator>,
}

impl CompiledCommand {
    /// Checks `input` against the schema; the message names the field.
    pub fn check(&self, input: &Value) -> Result<(), String> {
        let Some(validator) = &self.validator else {
            return Ok(());
        };
        let problems: Vec<String> = validator
            .iter_errors(input)
            .take(5)
            .map(|e| format!("input{}: {e}", e.instance_path))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

type Compiled = HashMap<String, Arc<CompiledCommand>>;

pub struct Catalog {
    store: Arc<dyn Store>,
    /// When it was read, and the commands by full name.
    cache: RwLock<Option<(Instant, Compiled)>>,
}

impl Catalog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: RwLock::new(None),
        }
    }

    /// The command `app.name`, or `None` if no worker ever published it.
    pub async fn lookup(
        &self,
        full_name: &str,
    ) -> Result<Option<Arc<CompiledCommand>>, StoreError> {
        if let Some((at, commands)) = &*self.cache.read().expect("never poisoned") {
            if at.elapsed() < FRESH_FOR {
                if let Some(found) = commands.get(full_name) {
                    return Ok(Some(found.clone()));
                }
            }
        }
        let commands = self.refresh().await?;
        Ok(commands.get(full_name).cloned())
    }

    async fn refresh(&self) -> Result<Compiled, StoreError> {
        let infos = self.store.commands().await?;
        let commands: Compiled = infos
            .into_iter()
            .map(|info| {
                let validator = match jsonschema::validator_for(&info.input_schema) {
                    Ok(validator) => Some(validator),
                    Err(err) => {
                        tracing::warn!(command = %info.full_name(), error = %err, "published input schema does not compile; input is not checked");
                        None
                    }
                };
                (info.full_name(), Arc::new(CompiledCommand { info, validator }))
            })
            .collect();
        *self.cache.write().expect("never poisoned") = Some((Instant::now(), commands.clone()));
        Ok(commands)
    }
}
