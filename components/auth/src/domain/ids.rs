//! User ids: UUIDv7 (RFC 9562) for new users; any 1..=255-character id for lookups, because
//! users backfilled from the legacy customer table keep the ids they already had.

use crate::error::Error;

/// Longest id (`client_auth.id` is `VARCHAR(255)`).
pub const MAX_ID_CHARS: usize = 255;

/// A new UUIDv7: 48-bit Unix milliseconds, version 7, 74 random bits, lowercase hyphenated.
pub fn new_user_id(now_ms: u64) -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes[6..]).map_err(|err| Error::internal("random source", &err))?;
    let ms = now_ms.to_be_bytes();
    bytes[..6].copy_from_slice(&ms[2..]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// Whether `id` can name a user: 1..=255 characters, no control characters. Anything else
/// cannot exist in `client_auth`, so callers answer "not found" / "missing" without a query.
pub fn is_plausible_user_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_ID_CHARS && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_layout_and_order() {
        let a = new_user_id(1_700_000_000_000).expect("id");
        let b = new_user_id(1_700_000_000_001).expect("id");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7", "version nibble");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant bits");
        assert!(a < b, "ids sort by creation time");
        assert_eq!(&a[..13], "018bcfe5-6800");
        assert_ne!(new_user_id(5).expect("id"), new_user_id(5).expect("id"));
    }

    #[test]
    fn plausible_ids() {
        assert!(is_plausible_user_id("legacy-42"));
        assert!(!is_plausible_user_id(""));
        assert!(!is_plausible_user_id("a\u{0}b"));
        assert!(!is_plausible_user_id(&"x".repeat(256)));
        assert!(is_plausible_user_id(&"é".repeat(255)));
    }
}
