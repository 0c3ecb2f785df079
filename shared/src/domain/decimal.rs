use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::Invalid;

/// An exact decimal from a JSON number or a decimal string, parsed from its text, never through
/// `f64`: `0.1` stays `0.1`. Anything `rust_decimal` cannot hold exactly (more than 28 decimal
/// places, magnitude past 7.9e28) is refused rather than rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecimalValue(Decimal);

/// Exponents beyond this cannot give a representable value; refuse before building strings.
const MAX_EXPONENT: i64 = 60;

impl DecimalValue {
    /// From the raw JSON of a value: a number (`21.5`, `1e3`) or a string (`"40.125"`).
    pub fn from_json(raw: &RawValue) -> Result<Self, Invalid> {
        let text = raw.get().trim();
        if text.starts_with('"') {
            // Borrowed when the string holds no escape (a decimal never needs one).
            if let Ok(inner) = serde_json::from_str::<&str>(text) {
                return Self::parse(inner);
            }
            let inner: String = serde_json::from_str(text)
                .map_err(|_| Invalid::new("must be a number or a decimal string"))?;
            Self::parse(&inner)
        } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            Self::parse(text)
        } else {
            Err(Invalid::new("must be a number or a decimal string"))
        }
    }

    /// JSON number syntax (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`), exactly.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let number = split_json_number(text)
            .ok_or_else(|| Invalid::new("must be a decimal number like 21.5, -3 or 1e3"))?;
        // Without an exponent the text is its own plain form.
        let plain = if text.contains(['e', 'E']) {
            std::borrow::Cow::Owned(number.to_plain()?)
        } else {
            std::borrow::Cow::Borrowed(text)
        };
        Decimal::from_str_exact(&plain)
            .map(Self)
            .map_err(|_| Invalid::new("is out of range: at most 28 decimal places and 28 digits"))
    }

    pub fn get(self) -> Decimal {
        self.0
    }
}

impl FromStr for DecimalValue {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        Self::parse(text)
    }
}

struct JsonNumber<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
    exp: i64,
}

fn split_json_number(text: &str) -> Option<JsonNumber<'_>> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(at) => {
            let exp = &rest[at + 1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Long exponents saturate; they are refused as out of range below.
            let value: i64 = digits.parse().unwrap_or(i64::MAX / 2);
            (
                &rest[..at],
                if exp.starts_with('-') { -value } else { value },
            )
        }
        None => (rest, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) if !frac.is_empty() => (int, frac),
        Some(_) => return None,
        None => (mantissa, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let int_ok = int == "0" || (!int.is_empty() && !int.starts_with('0') && digits(int));
    (int_ok && digits(frac)).then_some(JsonNumber {
        negative,
        int,
        frac,
        exp,
    })
}

impl JsonNumber<'_> {
    /// The same number without an exponent: `1.5e3` → `1500`, `25e-3` → `0.025`.
    fn to_plain(&self) -> Result<String, Invalid> {
        if self.exp.abs() > MAX_EXPONENT {
            return Err(Invalid::new(
                "is out of range: at most 28 decimal places and 28 digits",
            ));
        }
        let digits = format!("{}{}", self.int, self.frac);
        // Position of the decimal point within `digits`.
        let point = self.int.len() as i64 + self.exp;
        let mut plain = String::with_capacity(digits.len() + 70);
        if self.negative {
            plain.push('-');
        }
        if point <= 0 {
            plain.push_str("0.");
            plain.extend(std::iter::repeat_n('0', (-point) as usize));
            plain.push_str(&digits);
        } else if point as usize >= digits.len() {
            plain.push_str(&digits);
            plain.extend(std::iter::repeat_n('0', point as usize - digits.len()));
        } else {
            let (int, frac) = digits.split_at(point as usize);
            plain.push_str(int);
            plain.push('.');
            plain.push_str(frac);
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json(json: &str) -> Result<String, Invalid> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        DecimalValue::from_json(&raw).map(|d| d.get().to_string())
    }

    #[test]
    fn numbers_and_strings_are_exact() {
        for (json, expected) in [
            ("0.1", "0.1"),
            ("21.5", "21.5"),
            (r#""40.125""#, "40.125"),
            (r#""123456789.123456789""#, "123456789.123456789"),
            ("-0.000001", "-0.000001"),
            ("1e3", "1000"),
            ("1.5E+3", "1500"),
            ("25e-3", "0.025"),
            (r#""-7""#, "-7"),
            ("0", "0"),
            ("1.0", "1.0"),
            (
                "0.1000000000000000000000000001",
                "0.1000000000000000000000000001",
            ),
        ] {
            assert_eq!(from_json(json).unwrap(), expected, "{json}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        for json in [
            "true",
            "null",
            "[]",
            "{}",
            r#""abc""#,
            r#""NaN""#,
            r#""Infinity""#,
            r#""-inf""#,
            r#""""#,
            r#"" 1""#,
            r#""1 ""#,
            r#""+1""#,
            r#""01""#,
            r#""1.""#,
            r#"".5""#,
            r#""0x10""#,
            r#""1e""#,
            r#""1_000""#,
            "1e400",
            "-1e400",
            "1e-400",
            "100000000000000000000000000000", // 30 digits: past what rust_decimal holds
            "0.00000000000000000000000000001", // 29 decimal places
            r#""1e99999999999999999999999""#,
        ] {
            assert!(from_json(json).is_err(), "{json} should be refused");
        }
    }
}
