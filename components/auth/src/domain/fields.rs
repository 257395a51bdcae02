//! Parsed request values: a display name and an email address, each validated once.

use sealed_email::{EmailError, NormalizedEmail, normalize_email};
use unicode_normalization::UnicodeNormalization as _;

use crate::error::FieldError;

/// Longest name, in characters (`client_auth.name` is `VARCHAR(255)`).
pub const MAX_NAME_CHARS: usize = 255;

/// A display name: trimmed, in Unicode's composed form (NFC), 1..=255 characters, none that
/// [`breaks_display`]. NFC because "Zoë" typed as `e` + U+0308 (as macOS file names and some
/// keyboards give it) is the same name as the precomposed "Zoë", and Stripe's dashboard search,
/// invoices and any comparison should see one spelling. Not NFKC, which would rewrite what a
/// person chose to write (full-width letters, ligatures, superscripts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &str, raw: &str) -> Result<Name, FieldError> {
        let composed: String = raw.trim().nfc().collect();
        let trimmed = composed.as_str();
        if trimmed.is_empty() {
            return Err(FieldError::new(field, "required", "must not be empty"));
        }
        if trimmed.chars().count() > MAX_NAME_CHARS {
            return Err(FieldError::new(field, "too_long", format!("must be at most {MAX_NAME_CHARS} characters")));
        }
        if trimmed.chars().any(breaks_display) {
            return Err(FieldError::new(
                field,
                "invalid_characters",
                "must not contain control characters, line separators or bidirectional overrides",
            ));
        }
        Ok(Name(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `c` would make a name show as something else where it is displayed (Stripe's
/// dashboard, invoices, admin screens, logs): control characters, Unicode's line and paragraph
/// separators, and the bidirectional embeddings, overrides and isolates that reorder the text
/// around them (the "Trojan Source" spoof, CVE-2021-42574). The implicit marks (LRM, RLM, ALM)
/// stay allowed: names that mix scripts need them and they reorder nothing.
pub fn breaks_display(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// An email address in its normalized form (see `sealed_email::normalize_email`).
pub fn parse_email(field: &str, raw: &str) -> Result<NormalizedEmail, FieldError> {
    normalize_email(raw).map_err(|err| {
        let code = match err {
            EmailError::Empty => "required",
            EmailError::TooLong => "too_long",
            _ => "invalid_email",
        };
        // The crate's messages never repeat the address.
        FieldError::new(field, code, err.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("name", "  Zoë 🦀 ").expect("valid").as_str(), "Zoë 🦀");
        assert_eq!(Name::parse("name", "   ").unwrap_err().code, "required");
        assert_eq!(Name::parse("name", &"é".repeat(256)).unwrap_err().code, "too_long");
        assert!(Name::parse("name", &"é".repeat(255)).is_ok());
        assert_eq!(Name::parse("name", "a\u{0}b").unwrap_err().code, "invalid_characters");
        for spoof in ["Alice\u{202E}gnp.exe", "a\u{2066}b\u{2069}", "a\u{202A}b", "a\u{2028}b", "a\u{2029}b"] {
            assert_eq!(Name::parse("name", spoof).unwrap_err().code, "invalid_characters", "{spoof:?}");
        }
        assert_eq!(Name::parse("name", "Zoe\u{308} Ma\u{301}rquez").expect("valid").as_str(), "Zo\u{eb} M\u{e1}rquez", "composed");
        assert_eq!(Name::parse("name", "\u{ff21}\u{fb01}").expect("valid").as_str(), "\u{ff21}\u{fb01}", "not compatibility-folded");
        // The limit counts composed characters: 255 decomposed "é"s (510 code points) fit.
        assert_eq!(Name::parse("name", &"e\u{301}".repeat(255)).expect("fits").as_str(), "\u{e9}".repeat(255));
        assert!(Name::parse("name", "\u{5e9}\u{5dc}\u{5d5}\u{5dd} (Shalom)\u{200F}").is_ok(), "implicit marks stay allowed");
        assert_eq!(Name::parse("name", "Robert'); DROP TABLE client_auth;--").expect("kept as text").as_str().len(), 35);
    }

    #[test]
    fn emails_are_normalized_case_and_whitespace_insensitively() {
        let a = parse_email("email", "  Alice@Example.ORG ").expect("valid");
        let b = parse_email("email", "alice@example.org").expect("valid");
        assert_eq!(a, b);
        assert_eq!(parse_email("email", "not-an-email").unwrap_err().code, "invalid_email");
        assert_eq!(parse_email("email", "").unwrap_err().code, "required");
        let err = parse_email("email", "secret@@example.org").unwrap_err();
        assert!(!err.detail.contains("secret"), "never echoes the address");
    }
}
