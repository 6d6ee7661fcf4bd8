//! Schedules: when a periodic job is due, decided without I/O.
//!
//! A schedule keeps one instant, `next_run`: the earliest tick not yet
//! taken. Whoever takes a tick (a server's scheduler) moves `next_run` past
//! "now" with a compare-and-set, so each tick is taken once however many
//! servers look. [`plan_tick`] says what taking the due ticks means: which
//! tick, if any, gets a job, and where `next_run` goes.

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// A cron expression read in a time zone.
///
/// Five fields (minute hour day-of-month month day-of-week), or six with
/// seconds first; names (`MON`, `JAN`), ranges, steps, `L`, `W`, `#` and
/// the `@daily`-style aliases. Ticks follow the zone's wall clock: a time
/// the clocks skip at a daylight-saving change fires at the next existing
/// instant, a time they repeat fires once.
#[derive(Clone, Debug)]
pub struct CronTicks {
    cron: croner::Cron,
    zone: Tz,
}

/// Why a cron expression or a time zone was refused; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron expression {expression:?} is not valid: {reason}")]
    Cron { expression: String, reason: String },
    #[error("time zone {0:?} is not an IANA zone name (like \"UTC\" or \"Europe/Paris\")")]
    Zone(String),
    #[error("cron expression {0:?} never fires")]
    NeverFires(String),
}

impl CronTicks {
    /// Parses `expression` for the IANA zone `zone` (e.g. `UTC`,
    /// `Europe/Berlin`).
    pub fn parse(expression: &str, zone: &str) -> Result<Self, ScheduleError> {
        let zone = Tz::from_str(zone).map_err(|_| ScheduleError::Zone(zone.to_owned()))?;
        let cron = croner::Cron::from_str(expression).map_err(|err| ScheduleError::Cron {
            expression: expression.to_owned(),
            reason: err.to_string(),
        })?;
        let ticks = Self { cron, zone };
        // An expression that parses but matches no date (`0 0 30 2 *`)
        // would leave a schedule with no next run; say so at once.
        let now = Timestamp::from_datetime(Utc::now());
        if ticks.next_after(now).is_none() {
            return Err(ScheduleError::NeverFires(expression.to_owned()));
        }
        Ok(ticks)
    }

    /// The first tick strictly after `after`, or `None` when there is no
    /// further one (an expression limited to past years).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        // Ticks are whole seconds: the first one after `after` is the
        // first one after its whole second (croner keeps a fraction).
        let whole = after.as_micros().div_euclid(1_000_000) * 1_000_000;
        let local = Timestamp::from_micros(whole)
            .to_datetime()
            .with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(Timestamp::from_datetime(next.with_timezone(&Utc)))
    }

    /// The first tick at or after `at`.
    pub fn first_from(&self, at: Timestamp) -> Option<Timestamp> {
        self.next_after(Timestamp::from_micros(at.as_micros().saturating_sub(1)))
    }
}

/// What a scheduler does with ticks that went by while no server was
/// running (or while the command could not be enqueued).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    /// Missed ticks get no job; the schedule goes on from the next tick.
    #[default]
    Skip,
    /// However many were missed, one job runs for them at once.
    RunOnce,
}

impl MissedTicks {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::RunOnce => "run_once",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "skip" => Some(Self::Skip),
            "run_once" => Some(Self::RunOnce),
            _ => None,
        }
    }
}

/// How late a tick may be taken and still count as on time: a scheduler
/// looks about once a second, and a busy server can be later than that.
pub const TICK_GRACE: Duration = Duration::from_secs(60);

/// What taking a schedule's earliest due tick means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickPlan {
    /// The tick a job is enqueued for; `None` when the ticks taken are
    /// skipped.
    pub job_tick: Option<Timestamp>,
    /// Where `next_run` moves (`None`: the expression fires no more).
    /// It can still be due: the scheduler plans again until it is not.
    pub next_run: Option<Timestamp>,
}

/// Decides what taking a schedule's due ticks means at `now`; `None` when
/// none is due (`next_run` is later). A tick at most `grace` late is on
/// time: it gets a job of its own, and the next run moves to the tick after
/// it (a scheduler that fell a few ticks behind catches up, one job per
/// tick). Ticks older than that were missed (no server ran): they are
/// taken together, getting one job (as of the first) or none, as `missed`
/// says, and the next run moves to the first tick that is on time.
pub fn plan_tick(
    ticks: &CronTicks,
    next_run: Timestamp,
    now: Timestamp,
    missed: MissedTicks,
    grace: Duration,
) -> Option<TickPlan> {
    if next_run > now {
        return None;
    }
    let on_time_from = now.minus(grace);
    if next_run >= on_time_from {
        return Some(TickPlan {
            job_tick: Some(next_run),
            next_run: ticks.next_after(next_run),
        });
    }
    Some(TickPlan {
        job_tick: (missed == MissedTicks::RunOnce).then_some(next_run),
        next_run: ticks.first_from(on_time_from),
    })
}

/// The idempotency key of the job a schedule enqueues for a tick: a second
/// enqueue of the same tick finds the first job instead of adding one.
pub fn tick_key(schedule: &str, tick: Timestamp) -> String {
    format!("schedule:{schedule}:{}", tick.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    const GRACE: Duration = TICK_GRACE;

    #[test]
    fn five_and_six_field_expressions_tick_in_their_zone() {
        let minutely = CronTicks::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            minutely.next_after(at("2026-12-06T10:07:30Z")),
            Some(at("2026-12-06T10:15:00Z"))
        );
        let every_ten_seconds = CronTicks::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_ten_seconds.next_after(at("2026-12-06T10:07:30.5Z")),
            Some(at("2026-12-06T10:07:40Z"))
        );
        // 09:00 in Paris is 08:00 UTC in winter.
        let paris = CronTicks::parse("0 0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            paris.next_after(at("2026-12-06T10:00:00Z")),
            Some(at("2026-12-07T08:00:00Z"))
        );
    }

    #[test]
    fn a_tick_equal_to_the_start_is_not_after_it() {
        let every_second = CronTicks::parse("* * * * * *", "UTC").unwrap();
        let start = at("2026-12-06T10:00:00Z");
        assert_eq!(
            every_second.next_after(start),
            Some(at("2026-12-06T10:00:01Z"))
        );
        assert_eq!(every_second.first_from(start), Some(start));
        let fraction = at("2026-12-06T10:00:00.25Z");
        assert_eq!(
            every_second.next_after(fraction),
            Some(at("2026-12-06T10:00:01Z"))
        );
    }

    #[test]
    fn a_wall_clock_time_skipped_by_daylight_saving_fires_once_that_day() {
        // Clocks in Berlin jump from 02:00 to 03:00 on 2027-03-28.
        let half_past_two = CronTicks::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let first = half_past_two
            .next_after(at("2027-03-27T12:00:00Z"))
            .unwrap();
        let second = half_past_two.next_after(first).unwrap();
        assert!(first > at("2027-03-27T12:00:00Z"));
        assert!(
            first < at("2027-03-28T12:00:00Z"),
            "fires on the day: {first}"
        );
        assert!(second > at("2027-03-29T00:00:00Z"), "once: {second}");
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let err = CronTicks::parse("61 * * * *", "UTC").unwrap_err();
        assert!(err.to_string().contains("\"61 * * * *\""), "{err}");
        let err = CronTicks::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(err, ScheduleError::Zone("Mars/Olympus".into()));
        let err = CronTicks::parse("0 0 30 2 *", "UTC").unwrap_err();
        assert_eq!(err, ScheduleError::NeverFires("0 0 30 2 *".into()));
    }

    #[test]
    fn nothing_is_planned_before_the_next_run() {
        let ticks = CronTicks::parse("* * * * *", "UTC").unwrap();
        let next = at("2026-12-06T10:01:00Z");
        assert_eq!(
            plan_tick(
                &ticks,
                next,
                at("2026-12-06T10:00:59Z"),
                MissedTicks::Skip,
                GRACE
            ),
            None
        );
    }

    #[test]
    fn an_on_time_tick_gets_a_job_and_the_next_run_moves_to_the_next_tick() {
        let ticks = CronTicks::parse("* * * * *", "UTC").unwrap();
        let plan = plan_tick(
            &ticks,
            at("2026-12-06T10:01:00Z"),
            at("2026-12-06T10:01:00.8Z"),
            MissedTicks::Skip,
            GRACE,
        )
        .unwrap();
        assert_eq!(plan.job_tick, Some(at("2026-12-06T10:01:00Z")));
        assert_eq!(plan.next_run, Some(at("2026-12-06T10:02:00Z")));
    }

    #[test]
    fn a_scheduler_a_few_ticks_behind_runs_each_of_them() {
        let every_second = CronTicks::parse("* * * * * *", "UTC").unwrap();
        let now = at("2026-12-06T10:00:03.5Z");
        let mut next_run = at("2026-12-06T10:00:00Z");
        let mut jobs = Vec::new();
        while let Some(plan) = plan_tick(&every_second, next_run, now, MissedTicks::Skip, GRACE) {
            jobs.extend(plan.job_tick);
            next_run = plan.next_run.unwrap();
        }
        assert_eq!(
            jobs,
            ["00", "01", "02", "03"].map(|s| at(&format!("2026-12-06T10:00:{s}Z")))
        );
        assert_eq!(next_run, at("2026-12-06T10:00:04Z"));
    }

    #[test]
    fn ticks_missed_during_an_outage_are_skipped_or_run_once() {
        let ticks = CronTicks::parse("0 * * * *", "UTC").unwrap();
        let next_run = at("2026-12-06T03:00:00Z");
        // Back at 07:20: 03:00 to 07:00 were missed, none is on time.
        let now = at("2026-12-06T07:20:00Z");
        let skip = plan_tick(&ticks, next_run, now, MissedTicks::Skip, GRACE).unwrap();
        assert_eq!(skip.job_tick, None);
        assert_eq!(skip.next_run, Some(at("2026-12-06T08:00:00Z")));
        let once = plan_tick(&ticks, next_run, now, MissedTicks::RunOnce, GRACE).unwrap();
        assert_eq!(once.job_tick, Some(next_run));
        assert_eq!(once.next_run, skip.next_run);
        // Back at 07:00:30: 07:00 is on time. The misses are taken first
        // (one job or none), then 07:00 runs under either policy.
        let now = at("2026-12-06T07:00:30Z");
        for (missed, first_job) in [
            (MissedTicks::Skip, None),
            (MissedTicks::RunOnce, Some(next_run)),
        ] {
            let misses = plan_tick(&ticks, next_run, now, missed, GRACE).unwrap();
            assert_eq!(misses.job_tick, first_job);
            assert_eq!(misses.next_run, Some(at("2026-12-06T07:00:00Z")));
            let on_time = plan_tick(&ticks, misses.next_run.unwrap(), now, missed, GRACE).unwrap();
            assert_eq!(on_time.job_tick, Some(at("2026-12-06T07:00:00Z")));
            assert_eq!(on_time.next_run, Some(at("2026-12-06T08:00:00Z")));
        }
    }

    #[test]
    fn tick_keys_name_the_schedule_and_the_tick() {
        assert_eq!(
            tick_key("nightly", at("2026-12-06T03:00:00Z")),
            "schedule:nightly:2026-12-06T03:00:00.000000Z"
        );
    }

    proptest! {
        /// Whatever the expression, the last run and now, planning until
        /// nothing is due: the next run ends after now; each job's tick is
        /// a tick, in order, none twice; every tick within the grace gets a
        /// job; older ones get one job in all (run once) or none (skip).
        #[test]
        fn planning_until_nothing_is_due_takes_each_tick_once(
            expression in prop::sample::select(vec![
                "* * * * * *", "*/7 * * * * *", "0 * * * *", "*/5 * * * *",
                "0 9 * * MON-FRI", "15 2 1 * *", "0 30 2 * * *",
            ]),
            zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York"]),
            start in 1_700_000_000_000_000i64..1_900_000_000_000_000,
            late_micros in 0i64..200_000_000_000,
            run_once in any::<bool>(),
        ) {
            let ticks = CronTicks::parse(expression, zone).unwrap();
            let first = ticks.first_from(Timestamp::from_micros(start)).unwrap();
            let now = Timestamp::from_micros(first.as_micros() + late_micros);
            let missed = if run_once { MissedTicks::RunOnce } else { MissedTicks::Skip };
            let mut next_run = first;
            let mut jobs = Vec::new();
            let mut plans = 0;
            while let Some(plan) = plan_tick(&ticks, next_run, now, missed, GRACE) {
                prop_assert!(plan.next_run.unwrap() > next_run);
                jobs.extend(plan.job_tick);
                next_run = plan.next_run.unwrap();
                plans += 1;
                prop_assert!(plans < 200, "a plan per on-time tick, one for the misses");
            }
            prop_assert!(next_run > now);
            prop_assert_eq!(Some(next_run), ticks.next_after(now));
            let mut on_time = Vec::new();
            let mut tick = ticks.first_from(now.minus(GRACE).max(first));
            while let Some(at) = tick.filter(|at| *at <= now) {
                on_time.push(at);
                tick = ticks.next_after(at);
            }
            let any_missed = first < now.minus(GRACE);
            let mut expected = Vec::new();
            if any_missed && run_once {
                expected.push(first);
            }
            expected.extend(on_time);
            prop_assert_eq!(jobs, expected);
        }
    }
}
