//! The frame of every page: head, navigation, and small shared pieces
//! (status badges, relative times, JSON blocks).

use errand_core::{JobStatus, Timestamp};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Jobs,
    Submit,
    Workers,
    Queues,
    Schedules,
    Stats,
}

/// Whether the header offers to log out: only when the server has a token
/// (and so the browser holds the cookie).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Session {
    LoggedIn,
    Open,
}

impl Session {
    pub fn of(state: &crate::state::AppState) -> Self {
        if state.config.api_token.is_some() {
            Session::LoggedIn
        } else {
            Session::Open
        }
    }
}

pub fn page(title: &str, section: Section, session: Session, body: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Section| {
        html! {
            a href=(href) aria-current=[(section == this).then_some("page")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · errand" }
                link rel="stylesheet" href="/ui/assets/errand.css";
                script src="/ui/assets/htmx-2.0.11.min.js" defer {}
                script src="/ui/assets/htmx-ext-sse-2.2.4.min.js" defer {}
                script src="/ui/assets/errand.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui" { "errand" }
                    nav.main aria-label="Main" {
                        (link("/ui", "Jobs", Section::Jobs))
                        (link("/ui/submit", "Submit", Section::Submit))
                        (link("/ui/workers", "Workers", Section::Workers))
                        (link("/ui/queues", "Queues", Section::Queues))
                        (link("/ui/schedules", "Schedules", Section::Schedules))
                        (link("/ui/stats", "Stats", Section::Stats))
                    }
                    @if session == Session::LoggedIn {
                        form.logout method="post" action="/ui/logout" {
                            button.secondary type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn status_badge(status: JobStatus) -> Markup {
    html! { span class={ "status " (status.as_str()) } { (status.as_str()) } }
}

/// `3s ago`, `5m ago`, `in 2h`, with the exact time on hover.
pub fn relative(at: Timestamp, now: Timestamp) -> Markup {
    html! { time datetime=(at.to_rfc3339()) title=(at.to_rfc3339()) { (at.relative_to(now)) } }
}

/// Pretty JSON in a collapsible block, open when it is short.
pub fn json_block(label: &str, value: &Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let short = text.lines().count() <= 12;
    html! {
        details open[short] {
            summary { (label) }
            pre { code { (text) } }
        }
    }
}

/// A progress bar with its percentage, for tables and the job page.
pub fn progress_bar(fraction: Option<f64>, label: &str) -> Markup {
    match fraction {
        Some(f) => {
            let percent = (f.clamp(0.0, 1.0) * 100.0).round();
            html! {
                progress max="100" value=(percent) aria-label=(label) { (percent) "%" }
                " " span.muted.percent { (percent) "%" }
            }
        }
        None => html! {},
    }
}

/// A description as written in a doc comment or a command's config:
/// `backticks` become code, the rest stays text (escaped). No other
/// Markdown: descriptions are a line or two.
pub fn prose(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

#[cfg(test)]
mod prose_tests {
    #[test]
    fn backticks_become_code_and_the_rest_is_escaped() {
        let html = super::prose("Sleeps `secs` <seconds>").into_string();
        assert_eq!(html, "Sleeps <code>secs</code> &lt;seconds&gt;");
    }
}
