use super::Invalid;

/// A device's name: 1–100 characters once trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName(String);

impl DeviceName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let name = text.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(Invalid::new(
                "a name is 1 to 100 characters (spaces around it do not count)",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid::new("a name may not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_counts_characters_not_bytes() {
        assert_eq!(
            DeviceName::parse("  Boiler room  ").unwrap().as_str(),
            "Boiler room"
        );
        assert!(DeviceName::parse(&"é".repeat(100)).is_ok());
        assert!(DeviceName::parse(&"é".repeat(101)).is_err());
    }

    #[test]
    fn refuses_empty_and_control_characters() {
        for bad in [
            "",
            "   ",
            "a\u{0}b",
            "line\nbreak",
            "bell\u{7}",
            "\u{9b}csi",
        ] {
            assert!(DeviceName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
