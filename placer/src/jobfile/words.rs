//! Shell-like word splitting for `arguments` and the string form of `environment`.
//!
//! POSIX shell quoting, without any expansion (no globbing, no `$VAR`, no command
//! substitution): the words are handed to `execve` as they are.
//! - blanks (space, tab, newline) outside quotes separate words;
//! - `'...'` is literal;
//! - inside `"..."` a backslash escapes only `"`, `\`, `$`, `` ` `` and newline;
//! - outside quotes a backslash escapes the next character (backslash-newline vanishes).

/// Why a string could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("unterminated single quote opened at character {0}")]
    UnterminatedSingle(usize),
    #[error("unterminated double quote opened at character {0}")]
    UnterminatedDouble(usize),
    #[error("trailing backslash escapes nothing")]
    TrailingBackslash,
}

/// Splits `s` into words the way `sh` would, quotes respected.
pub fn split_words(s: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists even if empty once a quote was seen: `''` is one empty argument.
    let mut in_word = false;
    let mut chars = s.chars().enumerate().peekable();
    while let Some((pos, c)) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, ch)) => word.push(ch),
                        None => return Err(SplitError::UnterminatedSingle(pos)),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.peek() {
                            Some(&(_, e @ ('"' | '\\' | '$' | '`'))) => {
                                word.push(e);
                                chars.next();
                            }
                            Some(&(_, '\n')) => {
                                chars.next();
                            }
                            _ => word.push('\\'),
                        },
                        Some((_, ch)) => word.push(ch),
                        None => return Err(SplitError::UnterminatedDouble(pos)),
                    }
                }
            }
            '\\' => match chars.next() {
                Some((_, '\n')) => {}
                Some((_, ch)) => {
                    in_word = true;
                    word.push(ch);
                }
                None => return Err(SplitError::TrailingBackslash),
            },
            ch => {
                in_word = true;
                word.push(ch);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        split_words(s).unwrap()
    }

    #[test]
    fn blanks_separate_words() {
        assert_eq!(w("  a  b\tc\nd "), ["a", "b", "c", "d"]);
        assert!(w("").is_empty());
        assert!(w("   ").is_empty());
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(w(r#"'a b' 'c\d' '$x'"#), ["a b", r"c\d", "$x"]);
    }

    #[test]
    fn double_quotes_escape_only_special_characters() {
        assert_eq!(w(r#""a \"b\" \\ \$ \n""#), [r#"a "b" \ $ \n"#]);
    }

    #[test]
    fn quotes_join_adjacent_text() {
        assert_eq!(w(r#"pre'mid dle'"post fix""#), ["premid dlepost fix"]);
    }

    #[test]
    fn empty_quotes_make_an_empty_word() {
        assert_eq!(w(r#"a '' "" b"#), ["a", "", "", "b"]);
    }

    #[test]
    fn backslash_outside_quotes_escapes_next() {
        assert_eq!(w(r"a\ b c\'d"), ["a b", "c'd"]);
        assert_eq!(w("a\\\nb"), ["ab"]);
    }

    /// Quotes a word for `sh`: wrap in single quotes, each `'` becoming `'\''`.
    fn sh_quote(w: &str) -> String {
        format!("'{}'", w.replace('\'', r"'\''"))
    }

    proptest::proptest! {
        #[test]
        fn quoted_words_split_back_to_themselves(words in proptest::collection::vec(".*", 0..8)) {
            let line = words.iter().map(|w| sh_quote(w)).collect::<Vec<_>>().join(" ");
            proptest::prop_assert_eq!(split_words(&line).unwrap(), words);
        }

        #[test]
        fn plain_words_split_on_blanks(words in proptest::collection::vec("[a-zA-Z0-9_./=-]{1,12}", 0..8)) {
            let line = words.join("  \t ");
            proptest::prop_assert_eq!(split_words(&line).unwrap(), words);
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = split_words(&s);
        }
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        assert_eq!(
            split_words("ab 'cd"),
            Err(SplitError::UnterminatedSingle(3))
        );
        assert_eq!(split_words("\"x"), Err(SplitError::UnterminatedDouble(0)));
        assert_eq!(split_words("x\\"), Err(SplitError::TrailingBackslash));
    }
}
