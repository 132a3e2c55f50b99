//! Splitting a migration file into statements with PostgreSQL's own grammar
//! (libpg_query through the `pg_query` crate), keeping each statement's
//! byte range and line so that errors and lint findings can point at it.

use pg_query::NodeEnum;

/// One statement of a migration file.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Byte offset where the statement's own text starts (after leading
    /// whitespace and comments).
    pub start: usize,
    /// Byte offset just past the statement (before its `;`).
    pub end: usize,
    /// Byte offset where the parser says the statement begins (right after
    /// the previous `;`, so it may include comments).
    pub raw_start: usize,
    /// 1-based line of `start`.
    pub line: usize,
    /// The parse tree's top node.
    pub node: NodeEnum,
}

impl Statement {
    /// The statement's text without the trailing `;`.
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        &sql[self.start..self.end]
    }
}

/// Why a file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line of the statement that does not parse.
    pub line: usize,
    /// The parser's message.
    pub message: String,
}

/// Parses a whole file. On error, finds the first statement that fails (by
/// splitting with the scanner and parsing each piece) to report its line.
pub fn parse(sql: &str) -> Result<Vec<Statement>, ParseError> {
    match pg_query::parse(sql) {
        Ok(result) => {
            let mut out = Vec::with_capacity(result.protobuf.stmts.len());
            for raw in result.protobuf.stmts {
                let Some(node) = raw.stmt.and_then(|n| n.node) else { continue };
                let raw_start = usize::try_from(raw.stmt_location).unwrap_or(0).min(sql.len());
                let end = if raw.stmt_len <= 0 {
                    trim_end(sql, sql.len())
                } else {
                    (raw_start + raw.stmt_len as usize).min(sql.len())
                };
                let start = skip_trivia(sql, raw_start).min(end);
                out.push(Statement { start, end, raw_start, line: line_of(sql, start), node });
            }
            Ok(out)
        }
        Err(e) => Err(locate_error(sql, e.to_string())),
    }
}

fn locate_error(sql: &str, whole: String) -> ParseError {
    // Cut at the scanner's top-level `;` tokens (never inside strings,
    // dollar quotes or comments) and parse piece by piece.
    if let Ok(scan) = pg_query::scan(sql) {
        let mut start = 0usize;
        let semicolons = scan
            .tokens
            .iter()
            .filter(|t| t.token == pg_query::protobuf::Token::Ascii59 as i32)
            .map(|t| t.start.max(0) as usize);
        for end in semicolons.chain(std::iter::once(sql.len())) {
            let piece = &sql[start.min(end)..end];
            if !piece.trim().is_empty()
                && let Err(e) = pg_query::parse(piece)
            {
                return ParseError { line: line_of(sql, skip_trivia(sql, start)), message: e.to_string() };
            }
            start = end + 1;
        }
    }
    ParseError { line: 1, message: whole }
}

/// 1-based line number of byte `offset`.
pub fn line_of(sql: &str, offset: usize) -> usize {
    sql.as_bytes()[..offset.min(sql.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Skips whitespace, `-- …` and (nested) `/* … */` comments from `offset`.
fn skip_trivia(sql: &str, mut i: usize) -> usize {
    let b = sql.as_bytes();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else {
            return i.min(b.len());
        }
    }
}

fn trim_end(sql: &str, end: usize) -> usize {
    let trimmed = sql[..end].trim_end();
    let trimmed = trimmed.strip_suffix(';').unwrap_or(trimmed);
    trimmed.len()
}

/// The last name part of the `list` field of every `kind` node anywhere
/// inside `node`, in order of appearance: `("ColumnRef", "fields")` for the
/// columns an expression reads, `("FuncCall", "funcname")` for the
/// functions it calls. Walks the tree through its serde form, so no node
/// type is missed.
pub fn names_inside(node: &pg_query::Node, kind: &str, list: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, kind: &str, list: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(names) = map.get(kind).and_then(|c| c.get(list)).and_then(|n| n.as_array())
                    && let Some(last) = names.iter().rev().find_map(|n| n.pointer("/node/String/sval"))
                    && let Some(last) = last.as_str()
                {
                    out.push(last.to_owned());
                }
                map.values().for_each(|v| walk(v, kind, list, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, kind, list, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(node) {
        walk(&value, kind, list, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_dollar_quotes_strings_and_comments_intact() {
        let sql = "-- header; not a statement\nCREATE FUNCTION f() RETURNS trigger AS $$\nBEGIN\n  \
                   RAISE NOTICE 'a;b';\n  RETURN NEW;\nEND;\n$$ LANGUAGE plpgsql;\n\n/* c; */ DO $body$ BEGIN \
                   PERFORM 1; END $body$;\nSELECT 'x;y' AS \"we;ird\";\n";
        let stmts = parse(sql).unwrap();
        assert_eq!(stmts.len(), 3);
        assert!(stmts[0].text(sql).starts_with("CREATE FUNCTION") && stmts[0].text(sql).ends_with("plpgsql"));
        assert_eq!(stmts[0].line, 2);
        assert!(stmts[1].text(sql).starts_with("DO $body$"));
        assert_eq!(stmts[1].line, 9);
        assert_eq!(stmts[2].text(sql), "SELECT 'x;y' AS \"we;ird\"");
        assert_eq!(stmts[2].line, 10);
    }

    #[test]
    fn reports_the_line_of_the_broken_statement() {
        let sql = "select 1;\n\nselect 2;\nselec 3;\n";
        let err = parse(sql).unwrap_err();
        assert_eq!(err.line, 4, "{err}");
        assert!(err.message.contains("syntax error"), "{err}");
    }

    #[test]
    fn handles_a_last_statement_without_semicolon_and_empty_files() {
        let sql = "select 1;\r\nselect 2\r\n";
        let stmts = parse(sql).unwrap();
        assert_eq!(stmts[1].text(sql), "select 2");
        assert!(parse("-- nothing\n").unwrap().is_empty());
    }
}
