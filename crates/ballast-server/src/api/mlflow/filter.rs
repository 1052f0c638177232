//! MLflow's search filter grammar, as the registry search endpoints accept it:
//! `clause [AND clause]…` where a clause is `key op value`, the key is an attribute (`name`,
//! `version_number`, `run_id`, `source_path`, …) or a tag (`tags.k`, `tag.k`, with backticks
//! around keys that need them: ``tags.`my key` ``), the operator is `=`, `!=`, `LIKE`, `ILIKE`
//! or `IN`, and the value a quoted string, a number or a parenthesised list of strings.

use super::MlError;

/// What a clause compares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    /// An attribute by name.
    Attr(String),
    /// A tag by key.
    Tag(String),
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Clause {
    pub key: Key,
    pub op: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn bad(filter: &str, why: &str) -> MlError {
    MlError::invalid(format!("Invalid filter '{filter}': {why}"))
}

fn tokenize(f: &str) -> Result<Vec<Tok>, MlError> {
    let chars: Vec<char> = f.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(bad(f, "unterminated string")),
                    Some(&ch) if ch == c => {
                        // A doubled quote stands for the quote itself.
                        if chars.get(i + 1) == Some(&c) {
                            s.push(c);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if c == '(' {
            out.push(Tok::LParen);
            i += 1;
        } else if c == ')' {
            out.push(Tok::RParen);
            i += 1;
        } else if c == ',' {
            out.push(Tok::Comma);
            i += 1;
        } else if c == '=' {
            out.push(Tok::Op("=".into()));
            i += 1;
        } else if c == '!' && chars.get(i + 1) == Some(&'=') {
            out.push(Tok::Op("!=".into()));
            i += 2;
        } else if matches!(c, '<' | '>') {
            let mut op = c.to_string();
            if chars.get(i + 1) == Some(&'=') {
                op.push('=');
                i += 1;
            }
            out.push(Tok::Op(op));
            i += 1;
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            i += 1;
            while chars.get(i).is_some_and(|c| c.is_ascii_digit() || *c == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_alphanumeric() || c == '_' || c == '`' {
            let mut s = String::new();
            while let Some(&ch) = chars.get(i) {
                if ch == '`' {
                    let close = chars[i + 1..]
                        .iter()
                        .position(|x| *x == '`')
                        .ok_or_else(|| bad(f, "unterminated backtick"))?;
                    s.extend(&chars[i + 1..i + 1 + close]);
                    i += close + 2;
                } else if ch.is_alphanumeric() || ch == '_' || ch == '.' {
                    s.push(ch);
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Tok::Ident(s));
        } else {
            return Err(bad(f, &format!("unexpected character {c:?}")));
        }
    }
    Ok(out)
}

/// Parses a filter (empty: no clauses).
pub(crate) fn parse(filter: &str) -> Result<Vec<Clause>, MlError> {
    let toks = tokenize(filter)?;
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let key = match &toks[i] {
            Tok::Ident(k) => {
                let lower = k.to_ascii_lowercase();
                if let Some(t) = lower
                    .strip_prefix("tags.")
                    .or_else(|| lower.strip_prefix("tag."))
                    .map(|_| k.split_once('.').map_or("", |(_, t)| t))
                {
                    if t.is_empty() {
                        return Err(bad(filter, "missing tag key"));
                    }
                    Key::Tag(t.to_owned())
                } else {
                    let attr = lower
                        .strip_prefix("attribute.")
                        .or_else(|| lower.strip_prefix("attributes."))
                        .unwrap_or(&lower);
                    Key::Attr(attr.to_owned())
                }
            }
            _ => return Err(bad(filter, "expected an attribute or tags.<key>")),
        };
        i += 1;
        let op = match toks.get(i) {
            Some(Tok::Op(o)) => o.clone(),
            Some(Tok::Ident(o)) if ["like", "ilike", "in"].contains(&o.to_ascii_lowercase().as_str()) => {
                o.to_ascii_uppercase()
            }
            Some(Tok::Ident(o)) if o.eq_ignore_ascii_case("not") => match toks.get(i + 1) {
                Some(Tok::Ident(n)) if n.eq_ignore_ascii_case("in") => {
                    i += 1;
                    "NOT IN".to_owned()
                }
                _ => return Err(bad(filter, "expected IN after NOT")),
            },
            _ => {
                return Err(bad(
                    filter,
                    "expected a comparison operator (=, !=, LIKE, ILIKE, IN)",
                ))
            }
        };
        i += 1;
        let was_list = matches!(toks.get(i), Some(Tok::LParen));
        let values = match toks.get(i) {
            Some(Tok::Str(s) | Tok::Num(s)) => {
                i += 1;
                vec![s.clone()]
            }
            Some(Tok::LParen) => {
                i += 1;
                let mut vals = Vec::new();
                loop {
                    match toks.get(i) {
                        Some(Tok::Str(s) | Tok::Num(s)) => vals.push(s.clone()),
                        _ => return Err(bad(filter, "expected a quoted value in the list")),
                    }
                    i += 1;
                    match toks.get(i) {
                        Some(Tok::Comma) => i += 1,
                        Some(Tok::RParen) => {
                            i += 1;
                            break;
                        }
                        _ => return Err(bad(filter, "expected ',' or ')' in the list")),
                    }
                }
                vals
            }
            _ => return Err(bad(filter, "expected a quoted value")),
        };
        if (op == "IN" || op == "NOT IN") != was_list {
            return Err(bad(
                filter,
                "IN takes a parenthesised list; other operators one value",
            ));
        }
        clauses.push(Clause { key, op, values });
        match toks.get(i) {
            None => {}
            Some(Tok::Ident(a)) if a.eq_ignore_ascii_case("and") => {
                i += 1;
                if i >= toks.len() {
                    return Err(bad(filter, "dangling AND"));
                }
            }
            _ => return Err(bad(filter, "clauses must be joined with AND")),
        }
    }
    Ok(clauses)
}

/// SQL `LIKE` matching (`%` any run, `_` one character).
pub(crate) fn like(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    // The common shapes, without allocating: a literal, `prefix%`, `%suffix`.
    if !case_insensitive && !pattern.contains('_') {
        match pattern.matches('%').count() {
            0 => return pattern == text,
            1 if pattern.ends_with('%') => return text.starts_with(&pattern[..pattern.len() - 1]),
            1 if pattern.starts_with('%') => return text.ends_with(&pattern[1..]),
            _ => {}
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            pattern.to_lowercase().chars().collect(),
            text.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    // dp[j]: p[..i] matches t[..j]
    let mut dp = vec![false; t.len() + 1];
    let mut next = vec![false; t.len() + 1];
    dp[0] = true;
    for pc in &p {
        if *pc == '%' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= dp[j];
                next[j] = any;
            }
        } else {
            next[0] = false;
            for j in 1..=t.len() {
                next[j] = dp[j - 1] && (*pc == '_' || *pc == t[j - 1]);
            }
        }
        std::mem::swap(&mut dp, &mut next);
    }
    dp[t.len()]
}

/// Whether `value` (absent: no such attribute or tag) passes a string comparison.
pub(crate) fn matches(c: &Clause, value: Option<&str>) -> Result<bool, MlError> {
    let first = c.values.first().map_or("", String::as_str);
    Ok(match c.op.as_str() {
        "=" => value == Some(first),
        // A missing tag is "not equal": the client itself adds
        // ``tag.`mlflow.prompt.is_prompt` != 'true'`` to every model search.
        "!=" => value != Some(first),
        "LIKE" => value.is_some_and(|v| like(first, v, false)),
        "ILIKE" => value.is_some_and(|v| like(first, v, true)),
        "IN" => value.is_some_and(|v| c.values.iter().any(|x| x == v)),
        "NOT IN" => value.is_none_or(|v| !c.values.iter().any(|x| x == v)),
        other => {
            return Err(MlError::invalid(format!(
                "Invalid comparator '{other}' for a string attribute; use =, !=, LIKE, ILIKE or IN"
            )))
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_tags_and_lists() {
        let c = parse("name ILIKE '%bot%' AND tags.`my key` = \"v\" and run_id IN ('a', 'b')").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].key, Key::Attr("name".into()));
        assert_eq!(c[0].op, "ILIKE");
        assert_eq!(c[1].key, Key::Tag("my key".into()));
        assert_eq!(c[2].values, vec!["a".to_owned(), "b".to_owned()]);
        assert!(parse("").unwrap().is_empty());
        assert_eq!(parse("tag.team = 'x'").unwrap()[0].key, Key::Tag("team".into()));
        assert_eq!(
            parse("version_number = 3").unwrap()[0].values,
            vec!["3".to_owned()]
        );
    }

    #[test]
    fn refuses_bad_filters() {
        for f in [
            "name",
            "name = ",
            "name = 'x' OR name = 'y'",
            "name LIKE",
            "name = 'x",
            "tags. = 'x'",
            "name IN 'x'",
        ] {
            assert!(parse(f).is_err(), "{f}");
        }
    }

    #[test]
    fn like_matches() {
        assert!(like("a%c", "abbc", false));
        assert!(like("a_c", "abc", false));
        assert!(!like("a_c", "abbc", false));
        assert!(like("A%", "abc", true));
        assert!(!like("A%", "abc", false));
        assert!(like("%", "", false));
        // The shortcut shapes agree with the general matcher (case-insensitive takes it).
        for (p, t) in [
            ("abc", "abc"),
            ("abc", "abcd"),
            ("ab%", "abcd"),
            ("ab%", "xabc"),
            ("%cd", "abcd"),
            ("%cd", "abcdx"),
            ("%", "x"),
            ("", ""),
            ("é%", "été"),
        ] {
            assert_eq!(like(p, t, false), like(p, t, true), "{p} {t}");
        }
        assert!(like("ab%", "abcd", false) && !like("ab%", "xab", false));
        assert!(like("%cd", "abcd", false) && !like("%cd", "cdx", false));
        assert!(like("abc", "abc", false) && !like("abc", "abcd", false));
    }
}
