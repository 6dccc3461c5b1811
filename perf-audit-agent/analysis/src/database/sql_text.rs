//! Statement text from the audited process (a Parse on the wire) or from
//! `pg_stat_statements` is untrusted input. Before the agent asks the
//! server to plan such a text, [`single_statement`] must accept it: one
//! SELECT/INSERT/UPDATE/DELETE/WITH/VALUES/TABLE statement, at most
//! [`MAX_PLANNED_SQL_BYTES`] long, no `;` outside quotes and comments but
//! trailing ones. Pure and total: any `&str` gives an answer, in one pass.
//!
//! This is one of two locks: the agent also sends the text as ONE Parse of
//! the extended protocol (the server refuses several commands there),
//! inside a read-only transaction that is always rolled back, and never
//! executes it (`PREPARE` then `EXPLAIN EXECUTE`, see the agent's
//! `database::stats`).
//!
//! The lexer knows what PostgreSQL's does about where a `;` can hide:
//! `'...'` strings (`''` inside; also `B''`, `X''`, `N''`, `U&''`),
//! `E'...'` strings (backslash escapes), `"..."` identifiers (`""`
//! inside), `$tag$...$tag$` dollar quotes, `--` comments to the end of the
//! line and nested `/* */` comments. Anything unterminated is refused.

use std::fmt;

/// The longest text planned (64 KiB). pg_stat_statements keeps at most
/// `track_activity_query_size` bytes (1 KiB by default) and the wire a
/// capture's prefix, so longer texts are not the service's statements.
pub const MAX_PLANNED_SQL_BYTES: usize = 64 * 1024;

/// The statements whose plan may be inspected (first keyword).
pub const PLANNED_KINDS: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "TABLE"];

/// Why a text is not planned: shown in the report ("plan not inspected").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Empty,
    TooLong(usize),
    NulByte,
    /// A `;` with more text after it.
    SeveralStatements,
    Unterminated(&'static str),
    /// The first keyword (cut to 32 characters).
    NotPlannable(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Empty => write!(f, "empty statement text"),
            Refusal::TooLong(n) => write!(f, "statement text of {n} bytes, over the {MAX_PLANNED_SQL_BYTES}-byte ceiling"),
            Refusal::NulByte => write!(f, "statement text holds a NUL byte"),
            Refusal::SeveralStatements => write!(f, "several statements in one text (a `;` before the end): never sent to the server"),
            Refusal::Unterminated(what) => write!(f, "unterminated {what}"),
            Refusal::NotPlannable(word) => {
                write!(f, "not a {} statement (starts with `{word}`)", PLANNED_KINDS.join("/"))
            }
        }
    }
}

/// The one statement in `sql`, trailing `;`, spaces and comments removed
/// (what is sent to the server), or why it is refused.
pub fn single_statement(sql: &str) -> Result<&str, Refusal> {
    if sql.len() > MAX_PLANNED_SQL_BYTES {
        return Err(Refusal::TooLong(sql.len()));
    }
    if sql.contains('\0') {
        return Err(Refusal::NulByte);
    }
    let tokens = lex(sql)?;
    // The statement ends at the first `;`; after it only `;` may follow.
    let end = match tokens.iter().position(|t| t.kind == Kind::Semicolon) {
        Some(i) => {
            if tokens[i..].iter().any(|t| t.kind != Kind::Semicolon) {
                return Err(Refusal::SeveralStatements);
            }
            tokens[i].start
        }
        None => sql.len(),
    };
    let first = tokens.iter().find(|t| t.kind != Kind::Open).ok_or(Refusal::Empty)?;
    if first.start >= end {
        return Err(Refusal::Empty);
    }
    let word = &sql[first.start..first.end];
    if first.kind != Kind::Word || !PLANNED_KINDS.iter().any(|k| k.eq_ignore_ascii_case(word)) {
        return Err(Refusal::NotPlannable(word.chars().take(32).collect()));
    }
    let last = tokens.iter().rev().find(|t| t.end <= end).map_or(end, |t| t.end);
    Ok(&sql[..last])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Word,
    Semicolon,
    Open,
    /// Quoted text, numbers, operators, parameters.
    Other,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Significant tokens of `sql` (comments and spaces dropped). Every step
/// advances at least one byte, so this ends in at most `sql.len()` steps.
pub(crate) fn lex(sql: &str) -> Result<Vec<Token>, Refusal> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&c| c == b'\n' || c == b'\r').map_or(b.len(), |n| i + n);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = block_comment(b, i)?;
                continue;
            }
            b';' => {
                i += 1;
                Kind::Semicolon
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b'\'' => {
                i = quoted(b, i + 1, b'\'', false).ok_or(Refusal::Unterminated("string"))?;
                Kind::Other
            }
            b'"' => {
                i = quoted(b, i + 1, b'"', false).ok_or(Refusal::Unterminated("quoted identifier"))?;
                Kind::Other
            }
            b'$' => match dollar_tag(b, i) {
                Some(tag_end) => {
                    let tag = &b[i..tag_end];
                    let close = find(&b[tag_end..], tag).ok_or(Refusal::Unterminated("dollar-quoted string"))?;
                    i = tag_end + close + tag.len();
                    Kind::Other
                }
                None => {
                    // `$1` parameter (or a lone `$`).
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    Kind::Other
                }
            },
            c if is_ident_start(c) => {
                // A string prefix: E'..', B'..', X'..', N'..', U&'..'.
                let next = b.get(i + 1).copied();
                if matches!(c, b'e' | b'E') && next == Some(b'\'') {
                    i = quoted(b, i + 2, b'\'', true).ok_or(Refusal::Unterminated("escape string"))?;
                    Kind::Other
                } else if matches!(c, b'b' | b'B' | b'x' | b'X' | b'n' | b'N') && next == Some(b'\'') {
                    i = quoted(b, i + 2, b'\'', false).ok_or(Refusal::Unterminated("string"))?;
                    Kind::Other
                } else if matches!(c, b'u' | b'U') && next == Some(b'&') && matches!(b.get(i + 2), Some(b'\'') | Some(b'"')) {
                    let q = b[i + 2];
                    i = quoted(b, i + 3, q, false).ok_or(Refusal::Unterminated("string"))?;
                    Kind::Other
                } else {
                    while i < b.len() && is_ident_char(b[i]) {
                        i += 1;
                    }
                    Kind::Word
                }
            }
            _ => {
                i += 1;
                Kind::Other
            }
        };
        out.push(Token { kind, start, end: i });
    }
    Ok(out)
}

/// The end of the quoted text whose body starts at `i` (after the opening
/// quote): the doubled quote is a quote; with `backslash`, `\x` is one
/// escaped character.
fn quoted(b: &[u8], mut i: usize, quote: u8, backslash: bool) -> Option<usize> {
    while i < b.len() {
        let c = b[i];
        if backslash && c == b'\\' {
            i += 2;
        } else if c == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// `/* ... */` at `i`, nested as PostgreSQL nests them: the end.
fn block_comment(b: &[u8], mut i: usize) -> Result<usize, Refusal> {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else {
            i += 1;
        }
    }
    Err(Refusal::Unterminated("comment"))
}

/// A dollar-quote opening tag at `i` (`$$` or `$tag$`): its end.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j) == Some(&b'$') {
        return Some(j + 1);
    }
    if !b.get(j).is_some_and(|c| is_ident_start(*c)) {
        return None;
    }
    while j < b.len() && (is_ident_start(b[j]) || b[j].is_ascii_digit()) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_plannable_statement_is_accepted_without_its_trailing_semicolons() {
        assert_eq!(single_statement("SELECT v FROM t WHERE id = $1"), Ok("SELECT v FROM t WHERE id = $1"));
        assert_eq!(single_statement("  select 1 ; ; -- done\n"), Ok("  select 1"));
        assert_eq!(single_statement("(SELECT 1) UNION (SELECT 2);"), Ok("(SELECT 1) UNION (SELECT 2)"));
        assert_eq!(single_statement("/* a /* nested */ ; */ WITH x AS (SELECT 1) SELECT * FROM x"), Ok("/* a /* nested */ ; */ WITH x AS (SELECT 1) SELECT * FROM x"));
        for ok in [
            "SELECT 'a;b'",
            "SELECT 'it''s; fine'",
            "SELECT E'\\'; DROP TABLE t; --'",
            "SELECT \"we;ird\"\"name\" FROM t",
            "SELECT $$;$$, $tag$ ; $ $tag$",
            "SELECT 1 -- ; COMMIT",
            "SELECT U&'\\0041;'",
            "SELECT x FROM t WHERE a$b = 1 -- $99999999999",
            "INSERT INTO t VALUES ($1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "VALUES (1)",
            "TABLE t",
        ] {
            assert!(single_statement(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn the_injection_and_other_statements_are_refused_with_a_reason() {
        let injection = "SELECT v FROM t WHERE id = $1; COMMIT; BEGIN READ WRITE; CREATE TABLE x(i int); COMMIT; --";
        assert_eq!(single_statement(injection), Err(Refusal::SeveralStatements));
        assert_eq!(single_statement("SELECT 1; -- x\n SELECT 2"), Err(Refusal::SeveralStatements));
        assert_eq!(single_statement("SELECT 'a'';'; DROP TABLE t"), Err(Refusal::SeveralStatements));
        assert_eq!(single_statement("SELECT e'\\''; COMMIT"), Err(Refusal::SeveralStatements));
        assert_eq!(single_statement("SELECT somee'x'; COMMIT"), Err(Refusal::SeveralStatements));
        assert_eq!(single_statement("SELECT $a$ x $a$; COMMIT"), Err(Refusal::SeveralStatements));
        assert_eq!(single_statement("COMMIT"), Err(Refusal::NotPlannable("COMMIT".into())));
        assert_eq!(single_statement("CREATE TABLE x(i int)"), Err(Refusal::NotPlannable("CREATE".into())));
        assert_eq!(single_statement("'SELECT'"), Err(Refusal::NotPlannable("'SELECT'".into())));
        assert_eq!(single_statement(" -- only\n ;"), Err(Refusal::Empty));
        assert_eq!(single_statement(""), Err(Refusal::Empty));
        assert_eq!(single_statement("SELECT 'open"), Err(Refusal::Unterminated("string")));
        assert_eq!(single_statement("SELECT /* /* */"), Err(Refusal::Unterminated("comment")));
        assert_eq!(single_statement("SELECT $q$ ;"), Err(Refusal::Unterminated("dollar-quoted string")));
        assert_eq!(single_statement("SELECT \"x"), Err(Refusal::Unterminated("quoted identifier")));
        assert_eq!(single_statement("SELECT E'\\"), Err(Refusal::Unterminated("escape string")));
        assert_eq!(single_statement("SELECT 1\0"), Err(Refusal::NulByte));
        let long = format!("SELECT {}", "1".repeat(MAX_PLANNED_SQL_BYTES));
        assert_eq!(single_statement(&long), Err(Refusal::TooLong(long.len())));
        assert!(Refusal::SeveralStatements.to_string().contains("several statements"));
    }
}
