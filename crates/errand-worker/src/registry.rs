//! The commands a worker can run.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use errand_core::{error_kind, Timestamp};
use errand_store::{CommandInfo, NewJob};
use serde_json::Value;

use crate::command::{Command, CommandOptions, HandlerError};
use crate::context::JobContext;

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// A handler on untyped JSON: what every command becomes once registered.
/// Implement it directly for handlers whose types are only known at run
/// time (e.g. external programs).
pub trait DynCommand: Send + Sync + 'static {
    fn call(&self, input: Value, ctx: JobContext) -> HandlerFuture;
}

struct Typed<C>(Arc<C>);

impl<C: Command> DynCommand for Typed<C> {
    fn call(&self, input: Value, ctx: JobContext) -> HandlerFuture {
        let command = self.0.clone();
        Box::pin(async move {
            let input: C::Input = serde_json::from_value(input).map_err(|e| {
                HandlerError::permanent(format!("input does not fit {}.{}: {e}", C::APP, C::NAME))
                    .with_kind(error_kind::INVALID_INPUT)
            })?;
            let output = command.run(input, ctx).await?;
            serde_json::to_value(output)
                .map_err(|e| HandlerError::permanent(format!("the result is not valid JSON: {e}")))
        })
    }
}

struct FnCommand<F>(F);

impl<F, Fut> DynCommand for FnCommand<F>
where
    F: Fn(Value, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    fn call(&self, input: Value, ctx: JobContext) -> HandlerFuture {
        Box::pin((self.0)(input, ctx))
    }
}

/// A command ready to run, with what is published about it.
#[derive(Clone)]
pub struct RegisteredCommand {
    pub app: String,
    pub name: String,
    pub options: CommandOptions,
    pub input_schema: Value,
    pub(crate) handler: Arc<dyn DynCommand>,
}

impl RegisteredCommand {
    pub fn full_name(&self) -> String {
        errand_core::CommandName::new(self.app.as_str(), self.name.as_str()).to_string()
    }

    /// The handler, to register the command in another registry.
    pub fn handler(&self) -> Arc<dyn DynCommand> {
        self.handler.clone()
    }

    /// A job of this command with its defaults applied.
    pub fn new_job(&self, input: Value) -> NewJob {
        self.options
            .defaults()
            .new_job(self.app.as_str(), self.name.as_str(), input)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    #[error("command {0} is registered twice")]
    Duplicate(String),
    #[error("command {name}: {reason}")]
    InvalidCommand { name: String, reason: String },
}

/// The commands one worker (or one application) knows, by `app.name`.
#[derive(Clone, Default)]
pub struct Registry {
    commands: BTreeMap<String, RegisteredCommand>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a typed command. Registering the same `app.name` twice is an
    /// error, never a silent replacement.
    pub fn register<C: Command>(&mut self, command: C) -> Result<&mut Self, RegistryError> {
        let schema =
            serde_json::to_value(schemars::schema_for!(C::Input)).expect("a JSON Schema is JSON");
        let options = command.options();
        self.register_dyn(
            C::APP,
            C::NAME,
            schema,
            options,
            Arc::new(Typed(Arc::new(command))),
        )
    }

    /// Adds a command whose handler works on raw JSON.
    pub fn register_dyn(
        &mut self,
        app: &str,
        name: &str,
        input_schema: Value,
        options: CommandOptions,
        handler: Arc<dyn DynCommand>,
    ) -> Result<&mut Self, RegistryError> {
        let full = format!("{app}.{name}");
        let invalid = |reason: String| RegistryError::InvalidCommand {
            name: full.clone(),
            reason,
        };
        let well_formed = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !well_formed(app) || !well_formed(name) {
            return Err(invalid(
                "app and name must be non-empty and use only letters, digits, '_' and '-'".into(),
            ));
        }
        options
            .retry
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        if options.max_concurrency == Some(0) {
            return Err(invalid("max_concurrency must be at least 1".into()));
        }
        if self.commands.contains_key(&full) {
            return Err(RegistryError::Duplicate(full));
        }
        self.commands.insert(
            full,
            RegisteredCommand {
                app: app.to_owned(),
                name: name.to_owned(),
                options,
                input_schema,
                handler,
            },
        );
        Ok(self)
    }

    /// Adds a command from an async closure over raw JSON, with an
    /// accept-anything input schema. Handy for tests and small tools.
    pub fn register_fn<F, Fut>(
        &mut self,
        app: &str,
        name: &str,
        options: CommandOptions,
        handler: F,
    ) -> Result<&mut Self, RegistryError>
    where
        F: Fn(Value, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
    {
        let schema = serde_json::json!({"type": "object"});
        self.register_dyn(app, name, schema, options, Arc::new(FnCommand(handler)))
    }

    /// Builder form of [`register`](Self::register).
    pub fn with<C: Command>(mut self, command: C) -> Result<Self, RegistryError> {
        self.register(command)?;
        Ok(self)
    }

    pub fn get(&self, app: &str, name: &str) -> Option<&RegisteredCommand> {
        self.commands.get(&format!("{app}.{name}"))
    }

    pub fn get_full(&self, full_name: &str) -> Option<&RegisteredCommand> {
        self.commands.get(full_name)
    }

    /// Full names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.commands.keys().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RegisteredCommand> {
        self.commands.values()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// What a worker publishes in the store about its commands.
    pub fn command_infos(&self, worker_id: &str, now: Timestamp) -> Vec<CommandInfo> {
        self.iter()
            .map(|c| CommandInfo {
                app: c.app.clone(),
                name: c.name.clone(),
                description: c.options.description.clone(),
                input_schema: c.input_schema.clone(),
                output_schema: None,
                defaults: c.options.defaults(),
                worker_id: Some(worker_id.to_owned()),
                updated: now,
            })
            .collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.commands.keys()).finish()
    }
}
