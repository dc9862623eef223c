//! Incremental parser for `COPY ... TO STDOUT` text format.
//!
//! COPY data arrives in arbitrary chunks; rows are split at unescaped
//! newlines, fields at tabs, `\N` is NULL and backslash escapes are undone.
//! Only the current partial row is buffered, so memory stays bounded by the
//! widest row, not the table.

/// One field of a COPY row: `None` is SQL NULL.
pub type Field = Option<Vec<u8>>;

/// A COPY text line that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyTextError {
    /// The data ended in the middle of a row.
    #[error("COPY data ended inside a row")]
    UnterminatedRow,
    /// A backslash at the end of a line.
    #[error("COPY data has a dangling backslash")]
    DanglingEscape,
}

/// Splits a stream of COPY text chunks into rows of fields.
#[derive(Debug, Default)]
pub struct CopyTextParser {
    partial: Vec<u8>,
}

impl CopyTextParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; calls `row` for every row it completes.
    pub fn push<E>(&mut self, chunk: &[u8], mut row: impl FnMut(Vec<Field>) -> Result<(), E>) -> Result<(), E>
    where
        E: From<CopyTextError>,
    {
        self.push_lines(chunk, |line| row(parse_line(line)?))
    }

    /// Feeds a chunk; calls `line` with every line it completes (without its
    /// newline, still escaped). Split it with [`for_each_field`]: that path
    /// copies a value only when it has escapes to undo.
    pub fn push_lines<E>(&mut self, chunk: &[u8], mut line: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let mut rest = chunk;
        // Text-format COPY output escapes newlines inside values as `\n`,
        // so every raw newline ends a row.
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let (head, tail) = rest.split_at(pos);
            rest = tail.get(1..).unwrap_or_default();
            if self.partial.is_empty() {
                line(head)?;
            } else {
                self.partial.extend_from_slice(head);
                let whole = std::mem::take(&mut self.partial);
                let done = line(&whole);
                // Keep the allocation for the next row that straddles chunks.
                self.partial = whole;
                self.partial.clear();
                done?;
            }
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Call at the end of the data: fails if a row was left incomplete.
    pub fn finish(&self) -> Result<(), CopyTextError> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(CopyTextError::UnterminatedRow)
        }
    }
}

/// Parses one line (without its newline) into fields.
pub fn parse_line(line: &[u8]) -> Result<Vec<Field>, CopyTextError> {
    let mut fields = Vec::new();
    let mut scratch = Vec::new();
    for_each_field(line, &mut scratch, |f| {
        fields.push(f.map(<[u8]>::to_vec));
        Ok::<(), CopyTextError>(())
    })?;
    Ok(fields)
}

/// Calls `field` with each field of `line` in order: `None` for SQL NULL,
/// else the unescaped bytes — borrowed from `line` when the value has no
/// escapes, from `scratch` (reused across calls) when it has.
pub fn for_each_field<E>(
    line: &[u8],
    scratch: &mut Vec<u8>,
    mut field: impl FnMut(Option<&[u8]>) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<CopyTextError>,
{
    // One pass finds both the tabs that end fields and the backslashes that
    // mark a field as needing unescaping. A raw tab always ends a field:
    // COPY writes tabs inside values as `\t`.
    let mut marks = memchr::memchr2_iter(b'\t', b'\\', line);
    let mut start = 0;
    loop {
        let mut escaped = false;
        let end = loop {
            match marks.next() {
                Some(i) if line.get(i) == Some(&b'\\') => escaped = true,
                other => break other,
            }
        };
        let raw = line.get(start..end.unwrap_or(line.len())).unwrap_or_default();
        if !escaped {
            field(Some(raw))?;
        } else if raw == b"\\N" {
            field(None)?;
        } else {
            scratch.clear();
            unescape_into(raw, scratch)?;
            field(Some(scratch))?;
        }
        match end {
            Some(tab) => start = tab + 1,
            None => return Ok(()),
        }
    }
}

/// Undoes COPY text escapes in `raw`, appending to `out`.
fn unescape_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), CopyTextError> {
    out.reserve(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let e = *raw.get(i).ok_or(CopyTextError::DanglingEscape)?;
        i += 1;
        match e {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                // Up to three octal digits.
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                // Up to two hex digits; `\x` without digits is a literal x.
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 {
                    match raw.get(i).and_then(|&d| char::from(d).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == 0 {
                    out.push(b'x');
                } else {
                    out.push((v & 0xff) as u8);
                }
            }
            other => out.push(other),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows_of(chunks: &[&[u8]]) -> Vec<Vec<Field>> {
        let mut p = CopyTextParser::new();
        let mut rows = Vec::new();
        for c in chunks {
            p.push::<CopyTextError>(c, |r| {
                rows.push(r);
                Ok(())
            })
            .unwrap();
        }
        p.finish().unwrap();
        rows
    }

    #[test]
    fn splits_rows_across_chunks_and_unescapes() {
        let rows = rows_of(&[b"1\ta\\tb\\\\c\n2\t\\", b"N\n3\t\\x41\\101\\n\n"]);
        assert_eq!(
            rows,
            vec![
                vec![Some(b"1".to_vec()), Some(b"a\tb\\c".to_vec())],
                vec![Some(b"2".to_vec()), None],
                vec![Some(b"3".to_vec()), Some(b"AA\n".to_vec())],
            ]
        );
        let mut p = CopyTextParser::new();
        p.push::<CopyTextError>(b"1\t2", |_| Ok(())).unwrap();
        assert_eq!(p.finish(), Err(CopyTextError::UnterminatedRow));
        assert_eq!(parse_line(b"a\\"), Err(CopyTextError::DanglingEscape));
    }

    /// What Postgres' COPY TO does to a value (CopyAttributeOutText).
    fn escape(v: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        for &b in v {
            match b {
                b'\\' => o.extend_from_slice(b"\\\\"),
                b'\n' => o.extend_from_slice(b"\\n"),
                b'\r' => o.extend_from_slice(b"\\r"),
                b'\t' => o.extend_from_slice(b"\\t"),
                0x08 => o.extend_from_slice(b"\\b"),
                0x0c => o.extend_from_slice(b"\\f"),
                0x0b => o.extend_from_slice(b"\\v"),
                _ => o.push(b),
            }
        }
        o
    }

    proptest! {
        /// The one-pass field splitter agrees with splitting at every tab and
        /// unescaping each piece, on any bytes (malformed ones included).
        #[test]
        fn fields_match_a_plain_split(line in proptest::collection::vec(prop_oneof![
            Just(b'\t'), Just(b'\\'), Just(b'N'), Just(b'x'), Just(b'0'), Just(b'n'), any::<u8>()
        ], 0..24)) {
            let plain: Result<Vec<Field>, CopyTextError> = line
                .split(|&b| b == b'\t')
                .map(|raw| {
                    if raw == b"\\N" {
                        return Ok(None);
                    }
                    let mut out = Vec::new();
                    unescape_into(raw, &mut out).map(|()| Some(out))
                })
                .collect();
            prop_assert_eq!(parse_line(&line), plain);
        }

        #[test]
        fn round_trips_any_values_in_any_chunking(
            rows in proptest::collection::vec(proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)), 1..4), 0..6),
            cut in 1usize..7,
        ) {
            let mut data = Vec::new();
            for r in &rows {
                let fields: Vec<Vec<u8>> = r.iter().map(|f| match f { None => b"\\N".to_vec(), Some(v) => escape(v) }).collect();
                data.extend_from_slice(&fields.join(&b'\t'));
                data.push(b'\n');
            }
            let chunks: Vec<&[u8]> = data.chunks(cut).collect();
            prop_assert_eq!(rows_of(&chunks), rows);
        }
    }
}
