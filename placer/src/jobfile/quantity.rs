//! Quantities with units in job files: memory sizes and durations.
//!
//! Memory units follow HTCondor: K, M, G, T are powers of 1024 whether written `MB` or
//! `MiB` (HTCondor never meant 10^6), and a bare number is MiB. Results round up to
//! whole MiB so a request is never smaller than what was written.

/// Largest memory request accepted (1 PiB); anything bigger is a typo.
pub const MAX_MEMORY_MIB: u64 = 1 << 30;
/// Largest checkpoint interval accepted (one year).
pub const MAX_INTERVAL_S: u64 = 365 * 24 * 3600;

/// Parses `"512"`, `"512MB"`, `"2 GiB"`, `"1.5g"`, `"300 KiB"` into MiB, rounded up.
pub fn parse_memory_mib(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number_unit(text)?;
    let kib_per_unit: f64 = match unit.to_ascii_lowercase().as_str() {
        "k" | "kb" | "kib" => 1.0,
        "" | "m" | "mb" | "mib" => 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "unknown memory unit `{unit}` in \"{text}\"; use KiB, MiB, GiB or TiB (MB and GB mean the same here)"
            ))
        }
    };
    let mib = (number * kib_per_unit / 1024.0).ceil();
    check_memory_mib(mib, text)
}

/// Checks an integer MiB count given directly in the file.
pub fn memory_from_integer(value: i64) -> Result<u64, String> {
    check_memory_mib(value as f64, &value.to_string())
}

fn check_memory_mib(mib: f64, text: &str) -> Result<u64, String> {
    if mib.is_nan() || mib < 1.0 {
        return Err(format!(
            "\"{text}\" is not a positive amount of memory; write e.g. 512 (MiB) or \"2 GiB\""
        ));
    }
    if mib > MAX_MEMORY_MIB as f64 {
        return Err(format!("\"{text}\" is more than 1 PiB; check the unit"));
    }
    Ok(mib as u64)
}

/// Parses `"90"`, `"90s"`, `"5m"`, `"2 h"` into seconds. `0` means "off" and yields `None`.
pub fn parse_interval_s(text: &str) -> Result<Option<u64>, String> {
    let (number, unit) = split_number_unit(text)?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        _ => {
            return Err(format!(
                "unknown time unit `{unit}` in \"{text}\"; use s, m or h (e.g. \"90s\", \"5m\")"
            ))
        }
    };
    interval_from_seconds(number * factor, text)
}

/// Checks an integer second count given directly in the file.
pub fn interval_from_integer(value: i64) -> Result<Option<u64>, String> {
    interval_from_seconds(value as f64, &value.to_string())
}

fn interval_from_seconds(seconds: f64, text: &str) -> Result<Option<u64>, String> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(format!("\"{text}\" is negative; write seconds (e.g. 600) or \"10m\", or 0 for no periodic checkpoints"));
    }
    if seconds > MAX_INTERVAL_S as f64 {
        return Err(format!("\"{text}\" is more than a year; check the unit"));
    }
    let whole = seconds.ceil() as u64;
    Ok(if whole == 0 { None } else { Some(whole) })
}

/// Splits `" 1.5 GiB "` into (1.5, "GiB").
fn split_number_unit(text: &str) -> Result<(f64, &str), String> {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (digits, unit) = t.split_at(end);
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return Err(format!("\"{text}\" does not start with a number"));
    }
    let number: f64 = digits
        .parse()
        .map_err(|_| format!("\"{text}\" does not start with a valid number"))?;
    Ok((number, unit.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_are_binary_and_round_up() {
        assert_eq!(parse_memory_mib("512"), Ok(512));
        assert_eq!(parse_memory_mib("512MB"), Ok(512));
        assert_eq!(parse_memory_mib("512 MiB"), Ok(512));
        assert_eq!(parse_memory_mib("2 GiB"), Ok(2048));
        assert_eq!(parse_memory_mib("2GB"), Ok(2048));
        assert_eq!(parse_memory_mib("1.5g"), Ok(1536));
        assert_eq!(parse_memory_mib("1 T"), Ok(1024 * 1024));
        assert_eq!(parse_memory_mib("1536 KiB"), Ok(2));
        assert_eq!(parse_memory_mib("1_024 k"), Ok(1));
        assert_eq!(memory_from_integer(4096), Ok(4096));
    }

    #[test]
    fn memory_rejects_nonsense() {
        assert!(parse_memory_mib("lots").unwrap_err().contains("number"));
        assert!(parse_memory_mib("5 parsecs")
            .unwrap_err()
            .contains("unknown memory unit"));
        assert!(parse_memory_mib("0").unwrap_err().contains("positive"));
        assert!(parse_memory_mib("0.0001 KiB").is_ok(), "rounds up to 1 MiB");
        assert!(memory_from_integer(-1).unwrap_err().contains("positive"));
        assert!(parse_memory_mib("2000000 TiB")
            .unwrap_err()
            .contains("1 PiB"));
        assert!(parse_memory_mib("1.2.3G")
            .unwrap_err()
            .contains("valid number"));
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval_s("10s"), Ok(Some(10)));
        assert_eq!(parse_interval_s("10"), Ok(Some(10)));
        assert_eq!(parse_interval_s("5m"), Ok(Some(300)));
        assert_eq!(parse_interval_s("5 min"), Ok(Some(300)));
        assert_eq!(parse_interval_s("2h"), Ok(Some(7200)));
        assert_eq!(parse_interval_s("0.5s"), Ok(Some(1)));
        assert_eq!(parse_interval_s("0"), Ok(None));
        assert_eq!(interval_from_integer(0), Ok(None));
        assert_eq!(interval_from_integer(600), Ok(Some(600)));
        assert!(interval_from_integer(-5).unwrap_err().contains("negative"));
        assert!(parse_interval_s("5 fortnights")
            .unwrap_err()
            .contains("unknown time unit"));
        assert!(parse_interval_s("9999999h").unwrap_err().contains("year"));
    }
}
