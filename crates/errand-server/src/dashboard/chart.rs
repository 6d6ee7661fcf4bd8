//! The throughput chart of the last hour: server-rendered SVG, one stacked
//! bar per minute (completed below, failed above).

use errand_core::Timestamp;
use errand_store::FinishedInMinute;
use maud::{html, Markup};

const MINUTES: i64 = 60;
const MINUTE_MICROS: i64 = 60_000_000;
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;

/// The first instant of the oldest minute shown: what to ask the store for.
pub fn window_start(now: Timestamp) -> Timestamp {
    let this_minute = now.as_micros().div_euclid(MINUTE_MICROS);
    Timestamp::from_micros((this_minute - (MINUTES - 1)) * MINUTE_MICROS)
}

pub fn throughput(buckets: &[FinishedInMinute], now: Timestamp) -> Markup {
    let first = window_start(now).as_micros() / MINUTE_MICROS;
    let mut minutes = [(0_u64, 0_u64); MINUTES as usize];
    for bucket in buckets {
        let index = bucket.minute.as_micros() / MINUTE_MICROS - first;
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| minutes.get_mut(i)) {
            *slot = (bucket.completed, bucket.failed);
        }
    }
    let completed: u64 = minutes.iter().map(|m| m.0).sum();
    let failed: u64 = minutes.iter().map(|m| m.1).sum();
    let peak = minutes.iter().map(|m| m.0 + m.1).max().unwrap_or(0);
    let scale = nice_ceiling(peak);
    let plot = HEIGHT;
    let slot_width = WIDTH / MINUTES as f64;
    let bar_width = slot_width - 2.0;
    let height_of = |count: u64| count as f64 / scale as f64 * plot;
    let summary = format!(
        "{completed} completed and {failed} failed in the last hour; busiest minute {peak} jobs."
    );
    html! {
        figure.chart {
            // Stretched to the page's width; the labels are HTML, so they
            // keep their size on a phone.
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" preserveAspectRatio="none"
                aria-labelledby="throughput-title throughput-desc" {
                title #throughput-title { "Jobs finished per minute, last hour" }
                desc #throughput-desc { (summary) }
                line.grid x1="0" x2=(WIDTH) y1="0.5" y2="0.5" vector-effect="non-scaling-stroke" {}
                line.grid x1="0" x2=(WIDTH) y1=(plot / 2.0) y2=(plot / 2.0) vector-effect="non-scaling-stroke" {}
                line.axis x1="0" x2=(WIDTH) y1=(plot) y2=(plot) vector-effect="non-scaling-stroke" {}
                @for (i, (done, fail)) in minutes.iter().enumerate() {
                    @let x = i as f64 * slot_width + 1.0;
                    @let done_height = height_of(*done);
                    @let fail_height = height_of(*fail);
                    @let at = Timestamp::from_micros((first + i as i64) * MINUTE_MICROS);
                    g {
                        title { (at.to_datetime().format("%H:%M UTC")) ": " (done) " completed, " (fail) " failed" }
                        // Every minute gets a target to hover, even an empty one.
                        rect.hover x=(x) y="0" width=(bar_width) height=(plot) {}
                        @if *done > 0 {
                            rect.completed x=(x) y=(plot - done_height) width=(bar_width) height=(done_height) {}
                        }
                        @if *fail > 0 {
                            rect.failed x=(x) y=(plot - done_height - fail_height) width=(bar_width) height=(fail_height) {}
                        }
                    }
                }
            }
            div.axis aria-hidden="true" { span { "60 min ago" } span { "30 min ago" } span { "now" } }
            figcaption {
                span.key.completed { "completed" } " " span.key.failed { "failed" }
                " · top line: " (scale) " jobs/min, middle: " (scale as f64 / 2.0) " · " (summary)
            }
        }
    }
}

/// A round number at or above `peak` for the top of the scale (1, 2, 5 × 10ⁿ).
fn nice_ceiling(peak: u64) -> u64 {
    let mut magnitude = 1;
    loop {
        for step in [1, 2, 5] {
            if step * magnitude >= peak.max(1) {
                return step * magnitude;
            }
        }
        magnitude *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_tops_are_round() {
        assert_eq!(
            [0, 1, 3, 7, 10, 11, 480, 5001].map(nice_ceiling),
            [1, 1, 5, 10, 10, 20, 500, 10000]
        );
    }

    #[test]
    fn minutes_land_in_their_slot_and_old_ones_are_dropped() {
        let now = Timestamp::from_micros(1_000 * MINUTE_MICROS + 30_000_000);
        let at = |minute: i64| Timestamp::from_micros(minute * MINUTE_MICROS);
        let chart = throughput(
            &[
                FinishedInMinute {
                    minute: at(900),
                    completed: 50,
                    failed: 0,
                },
                FinishedInMinute {
                    minute: at(941),
                    completed: 4,
                    failed: 1,
                },
                FinishedInMinute {
                    minute: at(1_000),
                    completed: 8,
                    failed: 2,
                },
            ],
            now,
        )
        .into_string();
        assert_eq!(window_start(now), at(941));
        assert!(
            chart.contains("12 completed and 3 failed in the last hour; busiest minute 10 jobs.")
        );
        assert_eq!(chart.matches("class=\"completed\"").count(), 2);
        assert_eq!(chart.matches("class=\"failed\"").count(), 2);
        assert_eq!(chart.matches("class=\"hover\"").count(), 60);
    }
}
