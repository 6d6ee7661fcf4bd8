//! How things look on a terminal: status colours, relative times, and
//! aligned columns. Colour is written with ANSI codes through `anstream`,
//! which drops them when the output is not a terminal or `NO_COLOR` is set.

use anstyle::{AnsiColor, Style};
use errand::{JobStatus, Timestamp};

pub fn status_style(status: JobStatus) -> Style {
    let color = match status {
        JobStatus::New => AnsiColor::Blue,
        JobStatus::Running => AnsiColor::Yellow,
        JobStatus::Completed => AnsiColor::Green,
        JobStatus::Failed => AnsiColor::Red,
        JobStatus::Canceled => AnsiColor::Magenta,
    };
    Style::new().fg_color(Some(color.into()))
}

pub fn bold() -> Style {
    Style::new().bold()
}

pub fn dim() -> Style {
    Style::new().dimmed()
}

/// `text` in `style`, as ANSI (stripped later where colour is off).
pub fn paint(style: Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

/// `3s ago`, `5m ago`, `in 2h`: how people read times in a table.
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    at.relative_to(now)
}

/// Seconds as people say them: `850ms`, `12.3s`, `4m05s`.
pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0}ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", (secs / 60.0) as u64, secs as u64 % 60)
    } else {
        format!(
            "{}h{:02}m",
            (secs / 3600.0) as u64,
            (secs as u64 % 3600) / 60
        )
    }
}

/// Rows laid out in columns under a bold header. Cells may hold ANSI
/// styling; widths count only what shows.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let visible = |cell: &str| {
            anstream::adapter::strip_str(cell)
                .to_string()
                .chars()
                .count()
        };
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(visible(cell));
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<String>, out: &mut String| {
            let last = cells.len() - 1;
            for (i, cell) in cells.into_iter().enumerate() {
                out.push_str(&cell);
                if i < last {
                    let pad = widths[i] - visible(&cell) + 2;
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.push('\n');
        };
        let header = self.header.iter().map(|h| paint(bold(), h)).collect();
        line(header, &mut out);
        for row in &self.rows {
            line(row.clone(), &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_like_speech() {
        let now = Timestamp::from_micros(10_000_000_000);
        let ago = |secs: i64| {
            relative(
                Timestamp::from_micros(now.as_micros() - secs * 1_000_000),
                now,
            )
        };
        assert_eq!(ago(3), "3s ago");
        assert_eq!(ago(300), "5m ago");
        assert_eq!(ago(7200), "2h ago");
        assert_eq!(ago(3 * 86_400), "3d ago");
        assert_eq!(ago(-120), "in 2m");
    }

    #[test]
    fn durations_read_like_speech() {
        assert_eq!(duration(0.25), "250ms");
        assert_eq!(duration(12.34), "12.3s");
        assert_eq!(duration(245.0), "4m05s");
        assert_eq!(duration(3.0 * 3600.0 + 60.0), "3h01m");
    }

    #[test]
    fn columns_align_on_what_shows_not_on_ansi_codes() {
        let mut table = Table::new(vec!["A", "B"]);
        table.row(vec![
            paint(status_style(JobStatus::Failed), "failed"),
            "x".into(),
        ]);
        table.row(vec!["new".into(), "y".into()]);
        let plain = anstream::adapter::strip_str(&table.render()).to_string();
        assert_eq!(plain, "A       B\nfailed  x\nnew     y\n");
    }
}
