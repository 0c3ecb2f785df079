use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// A device's credential: `dk_` + 32 characters of lowercase base32 (160 random bits from the
/// OS CSPRNG). Shown once, when the device is created; only its SHA-256 is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey(String);

const PREFIX: &str = "dk_";
const RANDOM_BYTES: usize = 20;
const ENCODED_LEN: usize = RANDOM_BYTES * 8 / 5;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl DeviceKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; RANDOM_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            // The OS random source failing is not something to serve requests through.
            .expect("the OS random number generator failed");
        Self(format!("{PREFIX}{}", base32(&bytes)))
    }

    /// A key as a device presents it; anything not of the key's shape is no key at all.
    pub fn parse(text: &str) -> Option<Self> {
        let body = text.strip_prefix(PREFIX)?;
        (body.len() == ENCODED_LEN && body.bytes().all(|b| ALPHABET.contains(&b)))
            .then(|| Self(text.to_owned()))
    }

    /// What the database stores and looks up: SHA-256 of the key's text.
    pub fn hash(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, self.0.as_bytes()).as_ref());
        out
    }

    /// The key itself: only for the one response that shows it.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(***)")
    }
}

/// RFC 4648 base32, lowercase, no padding (the input is a multiple of 5 bytes).
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5);
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for i in (0..8).rev() {
            out.push(ALPHABET[((bits >> (i * 5)) & 31) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_shape_and_differ() {
        let a = DeviceKey::generate();
        let b = DeviceKey::generate();
        assert_ne!(a, b);
        assert_eq!(a.reveal().len(), 3 + 32);
        assert_eq!(DeviceKey::parse(a.reveal()), Some(a.clone()));
        assert_ne!(a.hash(), b.hash());
        assert!(!format!("{a:?}").contains(&a.reveal()[3..]));
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"fooba"), "mzxw6ytb");
        assert_eq!(base32(&[0xff; 5]), "77777777");
    }

    #[test]
    fn odd_shapes_are_not_keys() {
        for bad in [
            "",
            "dk_",
            "dk_short",
            "DK_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "dk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "dk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1",
            "dk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1",
        ] {
            assert!(DeviceKey::parse(bad).is_none(), "{bad}");
        }
        assert!(DeviceKey::parse("dk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2").is_some());
    }
}
