//! What a run cost the errand process: CPU time and peak memory, from
//! getrusage(2). A PostgreSQL server's own CPU is not in these figures.

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    cpu: Duration,
    /// The process's peak resident set so far, in MiB.
    pub peak_rss_mib: f64,
}

impl Usage {
    pub(crate) fn now() -> Self {
        match getrusage(UsageWho::RUSAGE_SELF) {
            Ok(usage) => {
                let micros = |t: nix::sys::time::TimeVal| {
                    Duration::from_secs(t.tv_sec() as u64)
                        + Duration::from_micros(t.tv_usec() as u64)
                };
                Self {
                    cpu: micros(usage.user_time()) + micros(usage.system_time()),
                    // Linux reports kilobytes.
                    peak_rss_mib: usage.max_rss() as f64 / 1024.0,
                }
            }
            Err(_) => Self {
                cpu: Duration::ZERO,
                peak_rss_mib: f64::NAN,
            },
        }
    }

    /// CPU seconds spent since `earlier`.
    pub(crate) fn cpu_secs_since(&self, earlier: &Usage) -> f64 {
        self.cpu.saturating_sub(earlier.cpu).as_secs_f64()
    }
}
