//! Go-style durations (`30s`, `10m`, `1h30m`, `1.5h`), as Kubernetes and CEL's
//! `duration()` read them.

use std::time::Duration;

use thiserror::Error;

/// Why a duration could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    /// Not a Go duration.
    #[error("{0:?} is not a duration such as 30s, 10m or 1h30m (units: ns, us, ms, s, m, h)")]
    Syntax(String),
    /// Negative durations are never meaningful here.
    #[error("{0:?} is negative")]
    Negative(String),
    /// Beyond what we represent.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a Go duration string.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(input.to_owned());
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(syntax());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(syntax)?;
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(syntax()),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(syntax());
        }
        let too_large = || DurationError::TooLarge(input.to_owned());
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| too_large())?
        };
        total_nanos = whole
            .checked_mul(unit_nanos)
            .and_then(|n| total_nanos.checked_add(n))
            .ok_or_else(too_large)?;
        let mut scale = unit_nanos;
        for d in frac_part.bytes().take(18) {
            scale /= 10;
            total_nanos += u128::from(d - b'0') * scale;
        }
        rest = next;
    }
    if negative && total_nanos > 0 {
        return Err(DurationError::Negative(input.to_owned()));
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| DurationError::TooLarge(input.to_owned()))?;
    // The remainder of a division by 10^9 always fits in u32.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "5", "1d", "m", "1h-5m", "1.2.3s", "s10"] {
            assert_eq!(parse(bad), Err(DurationError::Syntax(bad.into())), "{bad}");
        }
        assert_eq!(parse("-5s"), Err(DurationError::Negative("-5s".into())));
        assert!(matches!(
            parse("999999999999999999999h"),
            Err(DurationError::TooLarge(_))
        ));
    }
}
