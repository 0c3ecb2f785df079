use super::Invalid;

/// A metric name: 1–64 characters of `[A-Za-z0-9_.:/-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metric(String);

impl Metric {
    pub const MAX_LEN: usize = 64;

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(Invalid::new("a metric is 1 to 64 characters"));
        }
        let allowed = |c: u8| c.is_ascii_alphanumeric() || b"_.:/-".contains(&c);
        if !text.bytes().all(allowed) {
            return Err(Invalid::new(
                "a metric may contain only letters, digits and _ . : / -",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_charset_and_lengths() {
        for ok in ["t", "temperature", "env/room-1:temp_c.avg", &"x".repeat(64)] {
            assert_eq!(Metric::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_empty_long_and_odd_characters() {
        for bad in [
            "",
            &"x".repeat(65),
            "has space",
            "tab\t",
            "ünits",
            "a;b",
            "a'b",
            "%",
        ] {
            assert!(Metric::parse(bad).is_err(), "{bad:?}");
        }
    }
}
