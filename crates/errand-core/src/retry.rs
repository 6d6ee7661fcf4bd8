//! The retry policy, field for field the `RetryConfig` of
//! surreal-commands, so Open Notebook's policies can be written down as is.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long to wait between attempts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WaitStrategy {
    /// `wait_time` every time.
    Fixed,
    /// `wait_multiplier · 2^(n-1)` clamped to `[wait_min, wait_max]`.
    #[default]
    Exponential,
    /// Uniform in `[wait_min, wait_max]`.
    Random,
    /// `exponential` plus uniform `[0, wait_time]`, still capped at `wait_max`.
    ExponentialJitter,
}

/// The most attempts a job may have: a bound for mistakes, far above any
/// sensible policy.
pub const MAX_ATTEMPTS: u32 = 10_000;

/// When and how often a failed job is tried again. Times are in seconds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts in all, counting the first one.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    #[serde(deserialize_with = "crate::whole::integer")]
    pub max_attempts: u32,
    pub wait_strategy: WaitStrategy,
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 315576000))]
    pub wait_time: f64,
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 315576000))]
    pub wait_min: f64,
    /// Below `wait_min`, every bounded wait is `wait_min`.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 315576000))]
    pub wait_max: f64,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub wait_multiplier: f64,
    /// If not empty, only errors of these kinds are retried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    /// Errors of these kinds are never retried (e.g. `validation`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_on: Vec<String>,
}

impl Default for RetryPolicy {
    /// surreal-commands' defaults: 3 attempts, exponential 2, 4, 8 … s up to 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            wait_strategy: WaitStrategy::Exponential,
            wait_time: 1.0,
            wait_min: 1.0,
            wait_max: 60.0,
            wait_multiplier: 2.0,
            retry_on: Vec::new(),
            stop_on: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RetryPolicyError {
    #[error("max_attempts must be from 1 to 10000, got {0}")]
    NoAttempts(u32),
    #[error("{field} must be a number of seconds from 0 to 315576000 (ten years), got {value}")]
    BadSeconds { field: &'static str, value: f64 },
    #[error("wait_multiplier must be ≥ 1, got {0}")]
    MultiplierBelowOne(f64),
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(RetryPolicyError::NoAttempts(self.max_attempts));
        }
        for (field, value) in [
            ("wait_time", self.wait_time),
            ("wait_min", self.wait_min),
            ("wait_max", self.wait_max),
        ] {
            if !value.is_finite() || !(0.0..=crate::time::MAX_SPAN_SECS).contains(&value) {
                return Err(RetryPolicyError::BadSeconds { field, value });
            }
        }
        if !self.wait_multiplier.is_finite() || self.wait_multiplier < 1.0 {
            return Err(RetryPolicyError::MultiplierBelowOne(self.wait_multiplier));
        }
        Ok(())
    }

    /// Whether an error of `kind` may be retried under this policy.
    pub fn allows_retry_of(&self, kind: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|k| k == kind);
        (self.retry_on.is_empty() || listed(&self.retry_on)) && !listed(&self.stop_on)
    }

    /// The wait after failed attempt number `attempt` (1-based).
    /// `random` is uniform in `[0, 1)`. A `wait_max` below `wait_min`
    /// means every bounded wait is `wait_min` (a range of one value).
    pub fn backoff(&self, attempt: u32, random: f64) -> Duration {
        let random = random.clamp(0.0, 1.0);
        let (min, max) = (self.wait_min, self.wait_max.max(self.wait_min));
        let exponential = || {
            let exponent = attempt.saturating_sub(1).min(1023) as i32;
            (self.wait_multiplier * 2f64.powi(exponent)).clamp(min, max)
        };
        let secs = match self.wait_strategy {
            WaitStrategy::Fixed => self.wait_time,
            WaitStrategy::Exponential => exponential(),
            WaitStrategy::Random => min + (max - min) * random,
            WaitStrategy::ExponentialJitter => (exponential() + self.wait_time * random).min(max),
        };
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(strategy: WaitStrategy) -> RetryPolicy {
        RetryPolicy {
            wait_strategy: strategy,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn exponential_defaults_wait_2_4_8_then_cap_at_60() {
        let p = policy(WaitStrategy::Exponential);
        let waits: Vec<u64> = (1..=7).map(|n| p.backoff(n, 0.0).as_secs()).collect();
        assert_eq!(waits, vec![2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn fixed_waits_wait_time() {
        let p = RetryPolicy {
            wait_time: 3.5,
            ..policy(WaitStrategy::Fixed)
        };
        assert_eq!(p.backoff(9, 0.7), Duration::from_millis(3500));
    }

    #[test]
    fn open_notebooks_process_source_policy_is_expressible() {
        let json = r#"{"max_attempts":15,"wait_strategy":"exponential_jitter",
            "wait_min":1,"wait_max":120,"stop_on":["validation","configuration"]}"#;
        let p: RetryPolicy = serde_json::from_str(json).unwrap();
        p.validate().unwrap();
        assert_eq!(p.max_attempts, 15);
        assert!(!p.allows_retry_of("validation"));
        assert!(p.allows_retry_of("network"));
        assert_eq!(p.backoff(20, 0.99), Duration::from_secs(120));
    }

    #[test]
    fn retry_on_limits_the_retried_kinds() {
        let p = RetryPolicy {
            retry_on: vec!["timeout".into()],
            ..RetryPolicy::default()
        };
        assert!(p.allows_retry_of("timeout"));
        assert!(!p.allows_retry_of("handler"));
    }

    #[test]
    fn a_max_below_the_min_is_a_range_of_one_value() {
        let narrow = RetryPolicy {
            wait_min: 10.0,
            wait_max: 1.0,
            ..RetryPolicy::default()
        };
        assert_eq!(narrow.validate(), Ok(()));
        for strategy in [
            WaitStrategy::Exponential,
            WaitStrategy::Random,
            WaitStrategy::ExponentialJitter,
        ] {
            let policy = RetryPolicy {
                wait_strategy: strategy,
                wait_time: 0.0,
                ..narrow.clone()
            };
            assert_eq!(
                policy.backoff(3, 0.7),
                Duration::from_secs(10),
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn validation_names_the_bad_field() {
        let bad = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(bad.validate(), Err(RetryPolicyError::NoAttempts(0)));
        let bad = RetryPolicy {
            wait_multiplier: 0.5,
            ..RetryPolicy::default()
        };
        assert!(bad.validate().is_err());
        let bad = RetryPolicy {
            wait_time: f64::NAN,
            ..RetryPolicy::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(RetryPolicyError::BadSeconds {
                field: "wait_time",
                ..
            })
        ));
    }

    fn any_valid_policy() -> impl Strategy<Value = RetryPolicy> {
        (
            prop::sample::select(vec![
                WaitStrategy::Fixed,
                WaitStrategy::Exponential,
                WaitStrategy::Random,
                WaitStrategy::ExponentialJitter,
            ]),
            0.0f64..100.0,
            0.0f64..100.0,
            0.0f64..500.0,
            1.0f64..10.0,
        )
            .prop_map(|(wait_strategy, wait_time, min, span, wait_multiplier)| {
                RetryPolicy {
                    max_attempts: 5,
                    wait_strategy,
                    wait_time,
                    wait_min: min,
                    wait_max: min + span,
                    wait_multiplier,
                    ..RetryPolicy::default()
                }
            })
    }

    proptest! {
        #[test]
        fn backoff_stays_within_the_policys_bounds(
            p in any_valid_policy(), attempt in 1u32..200, random in 0.0f64..1.0
        ) {
            prop_assert!(p.validate().is_ok());
            let wait = p.backoff(attempt, random).as_secs_f64();
            match p.wait_strategy {
                WaitStrategy::Fixed => prop_assert!((wait - p.wait_time).abs() < 1e-6),
                _ => {
                    prop_assert!(wait <= p.wait_max + 1e-6, "{wait} > max {}", p.wait_max);
                    prop_assert!(wait >= p.wait_min - 1e-6, "{wait} < min {}", p.wait_min);
                }
            }
        }

        #[test]
        fn exponential_backoff_never_shrinks(p in any_valid_policy(), attempt in 1u32..200) {
            let p = RetryPolicy { wait_strategy: WaitStrategy::Exponential, ..p };
            prop_assert!(p.backoff(attempt + 1, 0.0) >= p.backoff(attempt, 0.0));
        }
    }
}
