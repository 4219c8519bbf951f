//! The static read-only check of a query template, the same for PostgreSQL and SQLite: one
//! statement that starts as a query (SELECT, WITH, VALUES, TABLE, or a parenthesis) and names no
//! statement that writes, locks or changes settings anywhere, not in a `WITH` part either.
//! Comments, string literals, quoted identifiers and PostgreSQL dollar quotes are skipped, so
//! neither hides a keyword nor makes a false one. A word followed by `(` is a function call
//! (`replace(...)`), not a keyword. At run time the database enforces the same (a READ ONLY
//! transaction; SQLite's read-only open and `query_only`); this check makes `check-config` and
//! the daemon's start refuse such a template up front, naming its key.

/// Words by which a statement that starts as a query can still write: a data-modifying WITH
/// part (PostgreSQL), SELECT INTO (a new table), FOR UPDATE (locks), SQLite's REPLACE INTO.
/// Statements of other kinds are refused by their first word; writes hidden in functions are
/// left to the database's read-only transaction.
const WRITES: &[&str] = &["insert", "update", "delete", "merge", "into", "replace"];

/// Words a query may start with.
const READS: &[&str] = &["select", "with", "values", "table"];

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Other,
}

/// The template's tokens, outside comments, literals and quoted identifiers. `Err` when one of
/// those is not closed.
fn tokens(sql: &str) -> Result<Vec<Token>, String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // PostgreSQL nests block comments.
                let mut depth = 0usize;
                loop {
                    match (b.get(i), b.get(i + 1)) {
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => i += 1,
                        (None, _) => return Err("a /* comment is not closed".into()),
                    }
                }
            }
            b'\'' | b'"' | b'`' => {
                // A doubled quote is the quote itself; E'..' escapes with a backslash.
                let escapes = c == b'\'' && i > 0 && b[i - 1].eq_ignore_ascii_case(&b'e');
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("a quoted string or identifier is not closed".into()),
                        Some(b'\\') if escapes => i += 2,
                        Some(&x) if x == c && b.get(i + 1) == Some(&c) => i += 2,
                        Some(&x) if x == c => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                out.push(Token::Other);
            }
            b'[' => {
                // SQLite's [identifier].
                i = b[i..]
                    .iter()
                    .position(|&x| x == b']')
                    .map(|p| i + p + 1)
                    .ok_or("a [ identifier is not closed")?;
                out.push(Token::Other);
            }
            b'$' => {
                // $1 is a parameter; $tag$ ... $tag$ (tag not starting with a digit) a literal.
                let tag_len = b[i + 1..]
                    .iter()
                    .take_while(|x| x.is_ascii_alphanumeric() || **x == b'_')
                    .count();
                let starts_digit = b.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !starts_digit && b.get(i + 1 + tag_len) == Some(&b'$') {
                    let tag = &sql[i..i + tag_len + 2];
                    let body = i + tag.len();
                    let end = sql[body..]
                        .find(tag)
                        .ok_or("a $tag$ dollar-quoted string is not closed")?;
                    i = body + end + tag.len();
                } else {
                    i += 1 + tag_len;
                }
                out.push(Token::Other);
            }
            b';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            x if x.is_ascii_alphabetic() || x == b'_' => {
                let n = b[i..]
                    .iter()
                    .take_while(|x| x.is_ascii_alphanumeric() || **x == b'_')
                    .count();
                out.push(Token::Word(sql[i..i + n].to_ascii_lowercase()));
                i += n;
            }
            x if x.is_ascii_whitespace() => i += 1,
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `Ok` for one statement that only reads; else why not.
pub fn check_read_only(sql: &str) -> Result<(), String> {
    let mut t = tokens(sql)?;
    while t.last() == Some(&Token::Semicolon) {
        t.pop();
    }
    if t.contains(&Token::Semicolon) {
        return Err("it holds more than one statement; a template is one read-only query".into());
    }
    match t.iter().find(|x| **x != Token::Open) {
        Some(Token::Word(w)) if READS.contains(&w.as_str()) => {}
        Some(Token::Word(w)) => {
            return Err(format!(
                "it starts with {}; a template is a read-only query (SELECT, WITH, VALUES)",
                w.to_uppercase()
            ));
        }
        _ => {
            return Err(
                "it does not start with SELECT, WITH or VALUES; a template is a read-only query"
                    .into(),
            );
        }
    }
    for (i, tok) in t.iter().enumerate() {
        let Token::Word(w) = tok else { continue };
        let call = t.get(i + 1) == Some(&Token::Open);
        if WRITES.contains(&w.as_str()) && !call {
            let what = match w.as_str() {
                "into" => "SELECT INTO or INSERT INTO (it writes a table)".to_string(),
                "update" => "UPDATE (it writes, or locks rows as FOR UPDATE)".to_string(),
                other => other.to_uppercase(),
            };
            return Err(format!(
                "it contains {what}; a template may only read (quote an identifier of that \
                 name, \"{w}\")"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_read_only;

    #[test]
    fn queries_that_only_read_pass() {
        for sql in [
            "SELECT id::text AS id, title AS source, body AS text, ts_rank(tsv, q) AS score \
             FROM docs, websearch_to_tsquery('english', $1) q WHERE tsv @@ q ORDER BY score DESC LIMIT $2",
            "SELECT d.id, d.title AS source, snippet(docs_fts, 0, '', '', '…', 64) AS text, \
             bm25(docs_fts) AS score FROM docs_fts JOIN d ON d.rowid = docs_fts.rowid \
             WHERE docs_fts MATCH $1 ORDER BY score LIMIT $2;",
            "WITH q AS (SELECT $1::text AS t) SELECT replace(t, 'a', 'b') AS id FROM q LIMIT $2",
            "-- delete old rows? no\nSELECT 'insert; drop table x' AS \"update\" /* drop /* nested */ */ LIMIT $2",
            "SELECT $body$ DELETE FROM t; $body$ AS text, $1 LIMIT $2",
            "(SELECT 1) UNION (SELECT 2) LIMIT $2",
        ] {
            assert_eq!(check_read_only(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn statements_that_write_are_refused() {
        for sql in [
            "INSERT INTO t VALUES ($1, $2)",
            "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone LIMIT $2",
            "with x as (update t set a = $1 returning a) select a from x limit $2",
            "SELECT 1 LIMIT $2; DROP TABLE t",
            "SELECT * INTO copy FROM t LIMIT $2",
            "SELECT * FROM t LIMIT $2 FOR UPDATE",
            "/* hi */ DELETE FROM t WHERE a = $1",
            "REPLACE INTO t VALUES ($1, $2)",
            "PRAGMA writable_schema = 1",
            "SELECT 1 /* not closed",
            "SELECT 'not closed",
            "SELECT $x$ never closed",
            "   ",
        ] {
            assert!(check_read_only(sql).is_err(), "{sql}");
        }
    }
}
