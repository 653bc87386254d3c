//! How answers are printed: aligned tables for people, JSON for scripts, and errors on stderr
//! with the exit status they mean.

use std::{
    fmt::Display,
    io::{IsTerminal, Write},
    process::ExitCode,
};

use serde::Serialize;
use waypost_client::Error;

/// `-o`: how an answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns (the default when stdout is a terminal).
    Table,
    /// The API's JSON answer (the default otherwise).
    Json,
}

/// The format asked for, or the one that suits stdout.
pub(crate) fn format(asked: Option<Format>) -> Format {
    asked.unwrap_or_else(|| {
        if std::io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Json
        }
    })
}

/// Writes `text` to stdout. When the reader has gone (`waypost discover web | head -1`) the
/// command ends quietly with status 0, as Unix tools do, instead of `println!`'s panic (which
/// would exit 101, a status the CLI does not document).
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("waypost: cannot write to stdout: {err}");
        std::process::exit(1);
    }
}

/// [`print`] with a newline, for results (`println!` is for `waypost dev`'s banner only).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Prints `value` as pretty JSON and a newline.
pub(crate) fn json(value: &impl Serialize) {
    let text = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| unreachable!("the wire types always serialise: {e}"));
    print(&format!("{text}\n"));
}

/// Prints `value` as JSON on one line (a stream's line) and flushes it; an error means that
/// stdout is closed.
pub(crate) fn json_line(value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string(value)
        .unwrap_or_else(|e| unreachable!("the wire types always serialise: {e}"));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// A table of aligned columns, two spaces apart, with an upper-case header row.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| h.to_uppercase()).collect()],
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether only the header is there.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.len() == 1
    }

    /// The table as text, each line ending in a newline; the last column is not padded.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let pad = widths[c] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }

    pub(crate) fn print(&self) {
        print(&self.render());
    }
}

/// Rows of `name: value`, the names aligned: one object for people.
pub(crate) fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (name, value) in pairs {
        outln!(
            "{name:<width$}  {value}",
            name = format!("{name}:"),
            width = width + 1
        );
    }
}

/// A list for a cell: comma-separated, `-` when empty.
pub(crate) fn list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let joined = items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    or_dash(joined)
}

/// `-` for an empty cell.
pub(crate) fn or_dash(s: String) -> String {
    if s.is_empty() { "-".to_owned() } else { s }
}

/// An optional value for a cell.
pub(crate) fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A serde enum's wire name (`draining`, `critical`...).
pub(crate) fn wire(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// Exit status 1: the server refused, or could not be reached.
pub(crate) const FAILED: u8 = 1;
/// Exit status 2: bad usage (as clap's own usage errors).
pub(crate) const USAGE: u8 = 2;
/// Exit status 3: a write that waited for the sidecars is done, but not every one applied it
/// within the wait.
pub(crate) const NOT_PROPAGATED: u8 = 3;

/// Prints why a call failed on stderr and gives the exit status it means: the problem's `code`
/// and `detail` for a refusal, the endpoints tried for a connection failure.
pub(crate) fn failure(err: &Error) -> ExitCode {
    match err {
        Error::Config(message) => {
            eprintln!("waypost: {message}");
            ExitCode::from(USAGE)
        }
        Error::Problem {
            endpoint,
            status,
            problem,
        } => {
            eprintln!("waypost: {}: {}", problem.code.as_str(), problem.detail);
            eprintln!("  ({endpoint} answered {status})");
            ExitCode::from(FAILED)
        }
        Error::Unavailable { tried, last } => {
            if let Error::Problem { .. } = **last {
                failure(last)
            } else {
                eprintln!(
                    "waypost: cannot reach the control plane ({tried} address{} tried): {}",
                    if *tried == 1 { "" } else { "es" },
                    chain(last.as_ref())
                );
                ExitCode::from(FAILED)
            }
        }
        other => {
            eprintln!("waypost: {}", chain(other));
            ExitCode::from(FAILED)
        }
    }
}

/// An error with its sources (reqwest's own message says little: "error sending request").
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let mut t = Table::new(&["id", "address"]);
        t.row(vec!["a".into(), "10.0.0.1:80".into()]);
        t.row(vec!["longer-id".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "ID         ADDRESS\na          10.0.0.1:80\nlonger-id  x\n"
        );
        assert!(!t.is_empty());
        assert!(Table::new(&["x"]).is_empty());
    }

    #[test]
    fn cells() {
        assert_eq!(list(Vec::<String>::new()), "-");
        assert_eq!(list(["a", "b"]), "a,b");
        assert_eq!(opt(None::<u32>), "-");
        assert_eq!(wire(&waypost_client::model::Status::Draining), "draining");
    }
}
