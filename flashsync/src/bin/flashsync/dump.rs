//! `flashsync dump VIEW`: a view's local rows, streamed in key order with
//! flat memory, as CSV (the default), COPY text, or JSON lines.
//!
//! Rows are read a page at a time ([`flashsync::Rows`]) and written as they
//! come, in this process or — while `flashsync run` holds the store —
//! through its admin socket, one JSON array per row. CSV follows Postgres's
//! `COPY … (FORMAT csv, HEADER)` convention: a header line, NULL an unquoted
//! empty field, the empty string `""`, a field quoted when it holds a comma,
//! a quote or a line break. (The `csv` crate decides quoting for a whole
//! writer, not per field, so it cannot tell NULL from the empty string;
//! the quoting rule is these few lines instead. Tests read the output back
//! with the `csv` crate.)

use std::io::Write;

use flashsync::{Engine, KeyRange};
use serde_json::Value as Json;

use crate::output::row_json;

/// How `dump` prints rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CSV as Postgres writes it (a header; NULL is an unquoted empty field).
    Csv,
    /// Postgres `COPY` text: tab-separated, `\N` for NULL, escapes.
    Text,
    /// One JSON object per row, keys in column order.
    Json,
}

/// A view opened for dumping: its columns and a cursor over its rows.
pub struct Source {
    pub columns: Vec<String>,
    /// The columns' upstream types.
    pub types: Vec<String>,
    cursor: flashsync::Rows,
    left: usize,
}

impl Source {
    pub async fn open(engine: &Engine, view: &str, limit: Option<usize>) -> Result<Source, String> {
        let cursor = engine.rows(view, KeyRange::default()).await.map_err(|e| e.to_string())?;
        let (columns, types) = cursor.schema().columns.iter().map(|c| (c.name.clone(), c.type_name.clone())).unzip();
        Ok(Source { columns, types, cursor, left: limit.unwrap_or(usize::MAX) })
    }

    /// The next row as a JSON array, or `None` after the last (or the limit).
    pub async fn next(&mut self) -> Option<Result<Json, String>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let types: Vec<&str> = self.types.iter().map(String::as_str).collect();
        Some(self.cursor.next().await?.map(|row| row_json(&row, &types)).map_err(|e| e.to_string()))
    }
}

/// Writes rows to stdout in a format.
pub struct Printer {
    format: Format,
    columns: Vec<String>,
    /// The columns' upstream types (how a value prints: see `pgtext`);
    /// empty from a running process older than this field.
    types: Vec<String>,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Printer {
    pub fn new(format: Format, columns: Vec<String>, types: Vec<String>) -> std::io::Result<Printer> {
        let mut p = Printer { format, columns, types, out: std::io::BufWriter::new(std::io::stdout().lock()) };
        match format {
            Format::Csv => {
                let header: Vec<String> = p.columns.iter().map(|c| csv_text(c)).collect();
                writeln!(p.out, "{}", header.join(","))?;
            }
            Format::Text => {
                let header: Vec<String> = p.columns.iter().map(|c| text_cell(c)).collect();
                writeln!(p.out, "{}", header.join("\t"))?;
            }
            Format::Json => {}
        }
        Ok(p)
    }

    pub fn row(&mut self, row: &Json) -> std::io::Result<()> {
        let values = row.as_array().map(Vec::as_slice).unwrap_or_default();
        match self.format {
            Format::Csv => {
                let cells: Vec<String> = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| csv_cell(v, self.types.get(i).map_or("", String::as_str)))
                    .collect();
                writeln!(self.out, "{}", cells.join(","))
            }
            Format::Text => writeln!(self.out, "{}", text_row(values, &self.types)),
            Format::Json => {
                let obj: serde_json::Map<String, Json> =
                    self.columns.iter().cloned().zip(values.iter().cloned()).collect();
                writeln!(self.out, "{}", Json::Object(obj))
            }
        }
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// One CSV field: NULL is nothing at all; everything else is its text as
/// Postgres prints it (`type_name` is the column's upstream type), quoted
/// when needed.
fn csv_cell(v: &Json, type_name: &str) -> String {
    match crate::pgtext::value(v, type_name) {
        None => String::new(),
        Some(text) => csv_text(&text),
    }
}

/// A non-NULL CSV field: quoted (quotes doubled) when empty — an unquoted
/// empty field is NULL — or when it holds a comma, a quote or a line break,
/// or is `\.` (which would end a `COPY FROM STDIN` early), as Postgres does.
fn csv_text(s: &str) -> String {
    if s.is_empty() || s == "\\." || s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One row of a text dump: values as Postgres prints them ([`crate::pgtext`],
/// `types` are the columns' upstream types), COPY-escaped, `\N` for NULL,
/// tab-separated.
pub fn text_row<'a>(values: impl IntoIterator<Item = &'a Json>, types: &[String]) -> String {
    let cells: Vec<String> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match crate::pgtext::value(v, types.get(i).map_or("", String::as_str)) {
            None => "\\N".into(),
            Some(text) => text_cell(&text),
        })
        .collect();
    cells.join("\t")
}

/// One value of a text dump, escaped as Postgres' `COPY … TO STDOUT` text
/// format does: a tab or line break inside a value cannot split the row, and
/// SQL NULL (`\N`) differs from the string `NULL`.
pub fn text_cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_dumps_escape_what_would_split_a_row_and_keep_null_apart() {
        assert_eq!(text_cell("a\tb\nc\\d\re"), "a\\tb\\nc\\\\d\\re");
        assert_eq!(text_cell("NULL"), "NULL");
        assert_eq!(text_cell("plain"), "plain");
        assert_eq!(
            text_row(&[json!(true), Json::Null, json!(1e15)], &["bool".into(), "text".into(), "float8".into()]),
            "t\t\\N\t1e+15"
        );
    }

    #[test]
    fn csv_fields_follow_postgres() {
        assert_eq!(csv_cell(&Json::Null, "text"), "");
        assert_eq!(csv_cell(&json!(""), "text"), r#""""#);
        assert_eq!(csv_cell(&json!("a,b"), "text"), r#""a,b""#);
        assert_eq!(csv_cell(&json!("say \"hi\"\nbye"), "text"), "\"say \"\"hi\"\"\nbye\"");
        assert_eq!(csv_cell(&json!("NULL"), "text"), "NULL");
        assert_eq!(csv_cell(&json!(1.5), "float8"), "1.5");
        assert_eq!(csv_cell(&json!(false), "bool"), "f");
        assert_eq!(csv_cell(&json!("tab\there"), "text"), "tab\there");
        assert_eq!(csv_cell(&json!("\\."), "text"), "\"\\.\"");
    }
}
