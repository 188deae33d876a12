//! Byte counts written as Kubernetes quantities (`1Gi`, `500M`, `1048576`).

use thiserror::Error;

/// Why a quantity could not be read as a byte count.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    /// Not in the quantity grammar.
    #[error("{0:?} is not a quantity such as 512Mi, 1Gi or 1000000")]
    Syntax(String),
    /// Negative.
    #[error("{0:?} is negative")]
    Negative(String),
    /// Larger than 2^63-1, the largest quantity Kubernetes represents.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a quantity into a whole number of bytes, rounding a fraction up as
/// Kubernetes' `Quantity.Value()` does.
pub fn parse_bytes(input: &str) -> Result<u64, QuantityError> {
    let syntax = || QuantityError::Syntax(input.to_owned());
    let s = input.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(syntax());
    }
    // Exact arithmetic: value = mantissa * 10^(exp10) * 2^(exp2).
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{int_part}{frac_part}");
    let mut mantissa: u128 = 0;
    for d in digits.bytes() {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(d - b'0')))
            .ok_or_else(|| QuantityError::TooLarge(input.to_owned()))?;
    }
    let mut exp10: i64 = -(frac_part.len() as i64);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        other => {
            let exponent = other
                .strip_prefix(['e', 'E'])
                .ok_or_else(syntax)?
                .parse::<i64>()
                .map_err(|_| syntax())?;
            if !(-64..=64).contains(&exponent) {
                return Err(QuantityError::TooLarge(input.to_owned()));
            }
            exp10 += exponent;
        }
    }
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative(input.to_owned()));
    }
    let too_large = || QuantityError::TooLarge(input.to_owned());
    let mut value = mantissa.checked_mul(1u128 << exp2).ok_or_else(too_large)?;
    if exp10 >= 0 {
        for _ in 0..exp10 {
            value = value.checked_mul(10).ok_or_else(too_large)?;
        }
    } else {
        let mut divisor: u128 = 1;
        for _ in 0..(-exp10) {
            divisor = divisor.saturating_mul(10);
        }
        value = value.div_ceil(divisor);
    }
    u64::try_from(value)
        .ok()
        .filter(|v| *v <= i64::MAX as u64)
        .ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("1k"), Ok(1000));
        assert_eq!(parse_bytes("1.5Gi"), Ok(1536 << 20));
        assert_eq!(parse_bytes("1048576"), Ok(1_048_576));
        assert_eq!(parse_bytes("1e3"), Ok(1000));
        assert_eq!(parse_bytes("0"), Ok(0));
    }

    #[test]
    fn fractions_round_up() {
        assert_eq!(parse_bytes("1500m"), Ok(2));
        assert_eq!(parse_bytes("0.1"), Ok(1));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(parse_bytes("1Gb"), Err(QuantityError::Syntax(_))));
        assert!(matches!(parse_bytes(""), Err(QuantityError::Syntax(_))));
        assert!(matches!(parse_bytes("1..2"), Err(QuantityError::Syntax(_))));
        assert!(matches!(
            parse_bytes("-1Mi"),
            Err(QuantityError::Negative(_))
        ));
        assert!(matches!(
            parse_bytes("9Ei"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            parse_bytes("1e999"),
            Err(QuantityError::TooLarge(_))
        ));
    }
}
