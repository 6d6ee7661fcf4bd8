//! Built-in commands of app `demo`, so a bare errand is useful and testable.

use std::time::Duration;

use errand_worker::{Command, CommandOptions, HandlerError, JobContext, Registry, RegistryError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `demo.echo`: returns its input.
pub struct Echo;

impl Command for Echo {
    const APP: &'static str = "demo";
    const NAME: &'static str = "echo";
    type Input = Value;
    type Output = Value;

    fn options(&self) -> CommandOptions {
        CommandOptions {
            description: Some("Returns its input.".into()),
            ..CommandOptions::default()
        }
    }

    async fn run(&self, input: Value, _ctx: JobContext) -> Result<Value, HandlerError> {
        Ok(input)
    }
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepInput {
    /// How long to sleep in all, in seconds (at most a day).
    #[schemars(range(min = 0, max = 86400))]
    pub secs: f64,
    /// In how many steps, each reporting progress.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10000))]
    pub steps: u32,
}

fn one() -> u32 {
    1
}

/// `demo.sleep`: sleeps `secs` in `steps`, reporting progress after each;
/// stops early when canceled.
pub struct Sleep;

impl Command for Sleep {
    const APP: &'static str = "demo";
    const NAME: &'static str = "sleep";
    type Input = SleepInput;
    type Output = Value;

    fn options(&self) -> CommandOptions {
        CommandOptions {
            description: Some("Sleeps `secs` seconds in `steps` steps, reporting progress.".into()),
            ..CommandOptions::default()
        }
    }

    async fn run(&self, input: SleepInput, ctx: JobContext) -> Result<Value, HandlerError> {
        if !input.secs.is_finite() || input.secs < 0.0 {
            return Err(
                HandlerError::permanent("secs must be a number ≥ 0").with_kind("validation")
            );
        }
        let steps = input.steps.max(1);
        let step = Duration::from_secs_f64(input.secs / f64::from(steps));
        for done in 1..=steps {
            tokio::select! {
                () = ctx.canceled() => return Err(HandlerError::canceled()),
                () = tokio::time::sleep(step) => {}
            }
            let fraction = f64::from(done) / f64::from(steps);
            ctx.progress(fraction, format!("step {done} of {steps}"))
                .await?;
        }
        Ok(serde_json::json!({"slept_secs": input.secs, "steps": steps}))
    }
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailInput {
    /// How many attempts fail (with a retryable error) before one succeeds.
    #[schemars(range(max = 1000))]
    pub times: u32,
}

/// `demo.fail`: fails the first `times` attempts, then succeeds.
pub struct Fail;

impl Command for Fail {
    const APP: &'static str = "demo";
    const NAME: &'static str = "fail";
    type Input = FailInput;
    type Output = Value;

    fn options(&self) -> CommandOptions {
        CommandOptions {
            description: Some(
                "Fails `times` attempts with a retryable error, then succeeds.".into(),
            ),
            retry: errand_core::RetryPolicy {
                max_attempts: 5,
                wait_strategy: errand_core::WaitStrategy::Fixed,
                wait_time: 1.0,
                ..errand_core::RetryPolicy::default()
            },
            ..CommandOptions::default()
        }
    }

    async fn run(&self, input: FailInput, ctx: JobContext) -> Result<Value, HandlerError> {
        if ctx.attempt() <= input.times {
            return Err(HandlerError::retryable(format!(
                "demo failure {} of {}",
                ctx.attempt(),
                input.times
            )));
        }
        Ok(serde_json::json!({"succeeded_on_attempt": ctx.attempt()}))
    }
}

/// `demo.noop`: does nothing; the benchmark's job.
pub struct Noop;

impl Command for Noop {
    const APP: &'static str = "demo";
    const NAME: &'static str = "noop";
    type Input = Value;
    type Output = Value;

    async fn run(&self, _input: Value, _ctx: JobContext) -> Result<Value, HandlerError> {
        Ok(Value::Null)
    }
}

/// A registry with every demo command.
pub fn registry() -> Result<Registry, RegistryError> {
    Registry::new()
        .with(Echo)?
        .with(Sleep)?
        .with(Fail)?
        .with(Noop)
}
