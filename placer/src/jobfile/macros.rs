//! `$(Process)` / `$(Cluster)` expansion in job-file strings.
//!
//! Names are case-insensitive, as in HTCondor; `$(ProcId)` and `$(ClusterId)` are accepted
//! aliases. `$$(` stands for a literal `$(`. Any other `$(...)` is refused when the file is
//! parsed, so expansion itself cannot fail and a typo never reaches a running job.

/// A macro the job file may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Macro {
    Process,
    Cluster,
}

fn lookup(name: &str) -> Option<Macro> {
    match name.trim().to_ascii_lowercase().as_str() {
        "process" | "procid" => Some(Macro::Process),
        "cluster" | "clusterid" => Some(Macro::Cluster),
        _ => None,
    }
}

/// One piece of a string: literal text or a macro.
enum Piece<'a> {
    Text(&'a str),
    Macro(Macro),
}

/// Splits `s` into literal text and macros, or explains the first bad macro.
fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("$(") {
        if rest[..at].ends_with('$') {
            // `$$(` -> literal `$(`
            out.push(Piece::Text(&rest[..at]));
            out.push(Piece::Text("("));
            rest = &rest[at + 2..];
            continue;
        }
        out.push(Piece::Text(&rest[..at]));
        let after = &rest[at + 2..];
        let Some(close) = after.find(')') else {
            return Err(format!(
                "`$(` without a closing `)` in \"{s}\"; write $$( for a literal $("
            ));
        };
        let name = &after[..close];
        match lookup(name) {
            Some(m) => out.push(Piece::Macro(m)),
            None => {
                return Err(format!(
                    "unknown macro `$({name})` in \"{s}\"; mos knows $(Process) and $(Cluster) (write $$( for a literal $()"
                ))
            }
        }
        rest = &after[close + 1..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// Checks that every `$(...)` in `s` is a known macro.
pub fn validate(s: &str) -> Result<(), String> {
    pieces(s).map(|_| ())
}

/// Expands the macros of an already validated string.
pub fn expand(s: &str, cluster: u64, process: u32) -> String {
    match pieces(s) {
        Ok(parts) => {
            let mut out = String::with_capacity(s.len() + 8);
            for p in parts {
                match p {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Macro(Macro::Process) => out.push_str(&process.to_string()),
                    Piece::Macro(Macro::Cluster) => out.push_str(&cluster.to_string()),
                }
            }
            out
        }
        // Unreachable for validated input; leaving the text as written is the safe fallback.
        Err(_) => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_process_and_cluster_case_insensitively() {
        assert_eq!(expand("out.$(Process)", 7, 3), "out.3");
        assert_eq!(expand("$(Cluster).$(process)", 7, 3), "7.3");
        assert_eq!(expand("$(CLUSTERID)-$(ProcId)", 12, 0), "12-0");
        assert_eq!(expand("no macros", 1, 1), "no macros");
        assert_eq!(expand("$(Process)$(Process)", 1, 42), "4242");
    }

    #[test]
    fn double_dollar_is_literal() {
        assert_eq!(expand("echo $$(date)", 1, 2), "echo $(date)");
        assert!(validate("echo $$(date)").is_ok());
        assert_eq!(expand("$$($(Process))", 1, 2), "$(2)");
    }

    #[test]
    fn unknown_or_unterminated_macros_are_refused() {
        assert!(validate("$(Procss)")
            .unwrap_err()
            .contains("unknown macro `$(Procss)`"));
        assert!(validate("x $(Process")
            .unwrap_err()
            .contains("without a closing"));
        assert!(validate("plain $ dollar and (parens)").is_ok());
    }
}
