//! Cluster-wide limits on a command's jobs: how many run at once and how
//! many start per period, per command or per key (a value taken from each
//! job's input or context). The stores count; this module decides.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a limit's key is read from in each job: `input.user_id`,
/// `context.tenant.id` (a dotted path; the first part says which object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath {
    pub source: KeySource,
    pub path: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Input,
    Context,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Context => "context",
        }
    }
}

impl KeyPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split('.');
        let source = match parts.next() {
            Some("input") => KeySource::Input,
            Some("context") => KeySource::Context,
            _ => {
                return Err(format!(
                    "a limit's key is a path starting with input. or context. (like context.user_id), got {text:?}"
                ))
            }
        };
        let path: Vec<String> = parts.map(str::to_owned).collect();
        let plain = |part: &String| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if path.is_empty() || !path.iter().all(plain) {
            return Err(format!(
                "a limit's key names fields (letters, digits, _ and -) after input. or context., got {text:?}"
            ));
        }
        Ok(Self { source, path })
    }

    /// The path as SQLite's `json_extract` takes it: `$.user.id`.
    pub fn json_path(&self) -> String {
        format!("$.{}", self.path.join("."))
    }
}

/// The limits of one command, as stored and shown.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandLimit {
    /// The command, `app.name`.
    pub command: String,
    /// Limits apply per value of this path (`input.user_id`,
    /// `context.notebook_id`); left out, to the command as a whole.
    #[serde(default)]
    pub key: Option<String>,
    /// At most this many jobs running at once (per key).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_running: Option<u32>,
    /// At most this many starts in any `per_secs` seconds (per key).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_starts: Option<u32>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0))]
    pub per_secs: Option<f64>,
}

impl CommandLimit {
    /// Checks what a store cannot repair later; returns the key's path.
    pub fn validate(&self) -> Result<Option<KeyPath>, String> {
        crate::CommandName::parse(&self.command).map_err(|err| format!("a limit's {err}"))?;
        if self.max_running == Some(0) || self.max_starts == Some(0) {
            return Err("max_running and max_starts must be at least 1".into());
        }
        match (self.max_starts, self.per_secs) {
            (Some(_), Some(secs)) if !(secs > 0.0 && secs <= 86_400.0 * 366.0) => {
                return Err(format!(
                    "per_secs must be > 0 and at most a year, got {secs}"
                ))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err("max_starts and per_secs go together".into())
            }
            _ => {}
        }
        if self.max_running.is_none() && self.max_starts.is_none() {
            return Err("a limit sets max_running, or max_starts with per_secs, or both".into());
        }
        self.key.as_deref().map(KeyPath::parse).transpose()
    }

    /// The rate window, when the limit has one.
    pub fn window(&self) -> Option<(u32, Duration)> {
        Some((self.max_starts?, Duration::from_secs_f64(self.per_secs?)))
    }
}

/// How busy a key is now: its running jobs, and its starts within its
/// command's rate window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyUsage {
    pub running: u32,
    pub recent_starts: u32,
}

/// Why a waiting job with `key` is held back by `limit` at `usage`, in
/// words; `None` when its key has room (it waits for a worker, its
/// `run_at`, or its turn).
pub fn hold_reason(limit: &CommandLimit, key: &str, usage: KeyUsage) -> Option<String> {
    if let Some(max) = limit.max_running.filter(|max| usage.running >= *max) {
        return Some(format!(
            "held by its limit: {} of {max} running for {key}",
            usage.running
        ));
    }
    let (max, per) = limit.window()?;
    (usage.recent_starts >= max).then(|| {
        format!(
            "held by its limit: {} starts in the last {}s for {key} (at most {max})",
            usage.recent_starts,
            per.as_secs_f64()
        )
    })
}

/// A job a claim could start: its command and its limit key (`None`: not
/// limited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub command: &'a str,
    pub key: Option<&'a str>,
}

/// Which candidates (indexes, in order) a claim starts: at most `slots`,
/// in the order given, each only while its key stays within its command's
/// limits, counting the candidates admitted before it. A key whose
/// command has no limit (any more) is not held.
pub fn admit(
    candidates: &[Candidate<'_>],
    slots: usize,
    limits: &HashMap<String, CommandLimit>,
    usage: &HashMap<String, KeyUsage>,
) -> Vec<usize> {
    let mut taken: HashMap<&str, KeyUsage> = HashMap::new();
    let mut admitted = Vec::new();
    for (index, candidate) in candidates.iter().enumerate() {
        if admitted.len() == slots {
            break;
        }
        let (Some(key), Some(limit)) = (candidate.key, limits.get(candidate.command)) else {
            admitted.push(index);
            continue;
        };
        let now = taken
            .entry(key)
            .or_insert_with(|| usage.get(key).copied().unwrap_or_default());
        let room_to_run = limit.max_running.is_none_or(|max| now.running < max);
        let room_to_start = limit.max_starts.is_none_or(|max| now.recent_starts < max);
        if room_to_run && room_to_start {
            now.running += 1;
            now.recent_starts += 1;
            admitted.push(index);
        }
    }
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(max_running: Option<u32>, max_starts: Option<u32>) -> CommandLimit {
        CommandLimit {
            command: "a.podcast".into(),
            key: Some("context.user".into()),
            max_running,
            max_starts,
            per_secs: max_starts.map(|_| 60.0),
        }
    }

    #[test]
    fn key_paths_name_a_field_of_the_input_or_the_context() {
        let by_user = KeyPath::parse("context.user.id").unwrap();
        assert_eq!(by_user.source, KeySource::Context);
        assert_eq!(by_user.json_path(), "$.user.id");
        assert_eq!(
            KeyPath::parse("input.name").unwrap().source,
            KeySource::Input
        );
        for bad in [
            "user",
            "input",
            "input.",
            "body.x",
            "context..x",
            "input.a b",
            "input.$x",
        ] {
            assert!(KeyPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_checked_for_what_a_store_cannot_repair() {
        assert!(limit(Some(2), None).validate().is_ok());
        assert!(limit(None, Some(60)).validate().is_ok());
        assert!(limit(None, None).validate().is_err());
        assert!(limit(Some(0), None).validate().is_err());
        let mut no_period = limit(None, Some(5));
        no_period.per_secs = None;
        assert!(no_period.validate().is_err());
        let mut bad_command = limit(Some(1), None);
        bad_command.command = "podcast".into();
        assert!(bad_command.validate().is_err());
    }

    #[test]
    fn a_claim_admits_up_to_the_limit_per_key_in_order() {
        let limits = HashMap::from([("a.podcast".to_owned(), limit(Some(2), None))]);
        let usage = HashMap::from([(
            "a.podcast:u1".to_owned(),
            KeyUsage {
                running: 1,
                recent_starts: 0,
            },
        )]);
        let c = |command, key| Candidate { command, key };
        let candidates = [
            c("a.podcast", Some("a.podcast:u1")),
            c("a.podcast", Some("a.podcast:u1")), // u1 already runs one
            c("a.podcast", Some("a.podcast:u2")),
            c("a.other", None),
            c("a.podcast", Some("a.podcast:u2")),
            c("a.podcast", Some("a.podcast:u2")),
        ];
        assert_eq!(admit(&candidates, 10, &limits, &usage), vec![0, 2, 3, 4]);
        assert_eq!(admit(&candidates, 2, &limits, &usage), vec![0, 2]);
    }

    #[test]
    fn a_rate_limit_counts_recent_starts_and_a_removed_limit_holds_nothing() {
        let limits = HashMap::from([("a.podcast".to_owned(), limit(None, Some(3)))]);
        let usage = HashMap::from([(
            "a.podcast:u".to_owned(),
            KeyUsage {
                running: 9,
                recent_starts: 2,
            },
        )]);
        let candidates = [Candidate {
            command: "a.podcast",
            key: Some("a.podcast:u"),
        }; 3];
        assert_eq!(admit(&candidates, 10, &limits, &usage), vec![0]);
        assert_eq!(
            admit(&candidates, 10, &HashMap::new(), &usage),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn a_held_job_says_which_limit_holds_it() {
        let both = limit(Some(2), Some(60));
        let busy = KeyUsage {
            running: 2,
            recent_starts: 3,
        };
        assert_eq!(
            hold_reason(&both, "a.podcast:u", busy).as_deref(),
            Some("held by its limit: 2 of 2 running for a.podcast:u")
        );
        let fast = KeyUsage {
            running: 0,
            recent_starts: 60,
        };
        assert_eq!(
            hold_reason(&both, "a.podcast:u", fast).as_deref(),
            Some("held by its limit: 60 starts in the last 60s for a.podcast:u (at most 60)")
        );
        assert_eq!(
            hold_reason(
                &both,
                "a.podcast:u",
                KeyUsage {
                    running: 1,
                    recent_starts: 59
                }
            ),
            None
        );
    }

    proptest! {
        /// Whatever the candidates and the usage, no key goes past its
        /// limits, nothing is admitted twice, order is kept, and a
        /// candidate is left out only if its key is full.
        #[test]
        fn no_key_goes_past_its_limits(
            keys in prop::collection::vec(0u8..5, 0..60),
            running in prop::collection::vec(0u32..4, 5),
            max_running in 1u32..4,
            slots in 0usize..40,
        ) {
            let limits = HashMap::from([("a.podcast".to_owned(), limit(Some(max_running), None))]);
            let names: Vec<String> = (0..5).map(|k| format!("a.podcast:{k}")).collect();
            let usage: HashMap<String, KeyUsage> = names.iter().zip(&running)
                .map(|(n, r)| (n.clone(), KeyUsage { running: *r, recent_starts: 0 })).collect();
            let candidates: Vec<Candidate> = keys.iter()
                .map(|k| Candidate { command: "a.podcast", key: Some(&names[*k as usize]) }).collect();
            let admitted = admit(&candidates, slots, &limits, &usage);
            prop_assert!(admitted.len() <= slots);
            prop_assert!(admitted.windows(2).all(|w| w[0] < w[1]));
            for (k, name) in names.iter().enumerate() {
                let started = admitted.iter().filter(|i| keys[**i] as usize == k).count() as u32;
                prop_assert!(started == 0 || running[k] + started <= max_running);
                let offered = keys.iter().filter(|key| **key as usize == k).count() as u32;
                if admitted.len() < slots {
                    // Room was left: every key got all it could.
                    prop_assert_eq!(started, offered.min(max_running.saturating_sub(running[k])), "{}", name);
                }
            }
        }
    }
}
