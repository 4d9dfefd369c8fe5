//! Output for people (aligned tables, colour only on a terminal that wants it) and for scripts
//! (`--output json`).
//!
//! Colour goes through `anstream`, which strips it when the stream is not a terminal, when
//! `NO_COLOR` is set, or when the terminal cannot show it (`CLICOLOR_FORCE` forces it).

use std::io::Write as _;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use crate::exit::{Exit, Failure};

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned tables and text, for people.
    #[default]
    Table,
    /// JSON on stdout, for scripts.
    Json,
}

pub(crate) const BOLD: Style = Style::new().bold();
pub(crate) const GREEN: Style = AnsiColor::Green.on_default();
pub(crate) const RED: Style = AnsiColor::Red.on_default();
pub(crate) const YELLOW: Style = AnsiColor::Yellow.on_default();
pub(crate) const DIM: Style = Style::new().dimmed();

/// `text` in `style` (the escapes are stripped later where colour is off).
pub(crate) fn paint(style: Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

fn write_failed(error: std::io::Error) -> Failure {
    Failure::new(Exit::Failure, format!("cannot write the output: {error}"))
}

/// Prints rows under a bold header, columns aligned (elastic tabstops, as kubectl's tables).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> Result<(), Failure> {
    let mut writer = tabwriter::TabWriter::new(Vec::new()).padding(3).ansi(true);
    let header: Vec<String> = header.iter().map(|h| paint(BOLD, h)).collect();
    writeln!(writer, "{}", header.join("\t")).map_err(write_failed)?;
    for row in rows {
        // A tab or newline inside a cell would break the columns.
        let cells: Vec<String> = row.iter().map(|c| c.replace(['\t', '\n'], " ")).collect();
        writeln!(writer, "{}", cells.join("\t")).map_err(write_failed)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| Failure::new(Exit::Failure, e.to_string()))?;
    let mut out = anstream::stdout();
    out.write_all(&bytes).map_err(write_failed)?;
    out.flush().map_err(write_failed)
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn json(value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(Exit::Failure, format!("cannot encode JSON: {e}")))?;
    line(&text)
}

/// Prints one line on stdout.
pub(crate) fn line(text: &str) -> Result<(), Failure> {
    let mut out = anstream::stdout();
    writeln!(out, "{text}").map_err(write_failed)
}

/// Prints an error on stderr: `error: ...`.
pub(crate) fn error(failure: &Failure) {
    let mut err = anstream::stderr();
    let _ = writeln!(err, "{} {}", paint(RED.bold(), "error:"), failure.message);
}

/// A duration as people write it, to the millisecond under a minute and to the second above.
pub(crate) fn duration(d: Duration) -> String {
    let rounded = if d >= Duration::from_secs(60) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    if rounded.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_micros(1_500_400)), "1s 500ms");
        assert_eq!(duration(Duration::from_millis(3_723_456)), "1h 2m 3s");
    }
}
