//! Just enough CSV (RFC 4180) for ban and audit import/export: quoted
//! fields, doubled quotes, CRLF or LF. Exported cells that a spreadsheet
//! would run as a formula are prefixed with `'`.

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("line {0}: unterminated quoted field")]
    Unterminated(usize),
    #[error("line {0}: text after a closing quote")]
    AfterQuote(usize),
}

/// Parses `text` into records (blank lines skipped).
pub fn parse(text: &str) -> Result<Vec<(usize, Vec<String>)>, CsvError> {
    let mut out = Vec::new();
    let mut rec: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    let mut line = 1;
    let mut rec_line = 1;
    let mut in_quotes = false;
    let mut after_quote = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = false;
                    after_quote = true;
                }
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !after_quote => {
                in_quotes = true;
                any = true;
            }
            ',' => {
                rec.push(std::mem::take(&mut field));
                after_quote = false;
                any = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                if any || !field.is_empty() {
                    rec.push(std::mem::take(&mut field));
                    out.push((rec_line, std::mem::take(&mut rec)));
                }
                after_quote = false;
                any = false;
                line += 1;
                rec_line = line;
            }
            _ if after_quote => return Err(CsvError::AfterQuote(line)),
            _ => {
                field.push(c);
                any = true;
            }
        }
    }
    if in_quotes {
        return Err(CsvError::Unterminated(rec_line));
    }
    if any || !field.is_empty() {
        rec.push(field);
        out.push((rec_line, rec));
    }
    Ok(out)
}

/// Appends one record (CRLF-terminated).
pub fn write_row(out: &mut String, cells: &[&str]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let guarded;
        let cell = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            guarded = format!("'{cell}");
            guarded.as_str()
        } else {
            cell
        };
        if cell.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(cell);
        }
    }
    out.push_str("\r\n");
}

/// Unix seconds as RFC 3339 UTC (`2026-01-31T12:00:00Z`); empty for `None`.
pub fn time(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// RFC 3339 or Unix seconds; empty is `None`.
pub fn parse_time(s: &str) -> Result<Option<i64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(Some(n));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| Some(d.timestamp()))
        .map_err(|_| format!("`{s}` is not a time (RFC 3339 like 2026-01-31T12:00:00Z, or Unix seconds)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_quotes_commas_and_newlines() {
        let mut s = String::new();
        write_row(&mut s, &["kind", "value", "reason"]);
        write_row(&mut s, &["device", "abc-12345", "said \"hi\", then\nleft"]);
        let recs = parse(&s).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].1, vec!["device", "abc-12345", "said \"hi\", then\nleft"]);
        assert_eq!(recs[1].0, 2);
    }

    #[test]
    fn formulas_are_defused_on_export() {
        let mut s = String::new();
        write_row(&mut s, &["=HYPERLINK(\"x\")", "@a", "ok"]);
        assert!(s.starts_with("\"'=HYPERLINK"));
        assert!(s.contains(",'@a,"));
    }

    #[test]
    fn bad_csv_is_an_error_not_a_panic() {
        assert_eq!(parse("a,\"b\nc"), Err(CsvError::Unterminated(1)));
        assert_eq!(parse("a,\"b\"c\n"), Err(CsvError::AfterQuote(1)));
        assert_eq!(parse("\n\r\n").unwrap().len(), 0);
        assert_eq!(parse("a,,c").unwrap()[0].1, vec!["a", "", "c"]);
    }

    #[test]
    fn times_parse_both_ways() {
        assert_eq!(time(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(parse_time("1970-01-01T00:01:00Z"), Ok(Some(60)));
        assert_eq!(parse_time("60"), Ok(Some(60)));
        assert_eq!(parse_time(""), Ok(None));
        assert!(parse_time("tomorrow").is_err());
    }
}
