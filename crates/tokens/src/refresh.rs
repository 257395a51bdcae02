//! Opaque refresh tokens.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::keys::URL;

/// Length of a refresh token's text: 32 bytes as unpadded base64url.
pub const REFRESH_TOKEN_LEN: usize = 43;

/// A presented string that cannot be one of our refresh tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("refresh token is malformed")]
pub struct RefreshTokenError;

/// A refresh token: 256 random bits, sent to the client as 43 base64url characters. Store only
/// [`RefreshToken::hash`]. `Debug` is redacted; the text is wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(Zeroizing<String>);

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

impl RefreshToken {
    /// A new random token.
    ///
    /// # Panics
    /// Only if the operating system's random source fails.
    pub fn generate() -> RefreshToken {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut bytes[..]).expect("the OS random source failed");
        RefreshToken(Zeroizing::new(URL.encode(&bytes[..])))
    }

    /// Accepts a token presented by a client if it has the shape of one we issue (43 base64url
    /// characters that decode to 32 bytes), so junk never reaches the database.
    pub fn parse(presented: &str) -> Result<RefreshToken, RefreshTokenError> {
        if presented.len() != REFRESH_TOKEN_LEN {
            return Err(RefreshTokenError);
        }
        let bytes = Zeroizing::new(URL.decode(presented).map_err(|_| RefreshTokenError)?);
        // Canonical encodings only: the last character's unused bits must be zero.
        if bytes.len() != 32 || URL.encode(&bytes[..]) != presented {
            return Err(RefreshTokenError);
        }
        Ok(RefreshToken(Zeroizing::new(presented.to_owned())))
    }

    /// The text to hand to the client.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the text, lowercase hex (64 characters): what the database stores and looks up.
    pub fn hash(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }

    /// Whether `stored_hash` is this token's [`hash`](Self::hash), compared in constant time.
    pub fn matches_hash(&self, stored_hash: &str) -> bool {
        constant_time_eq(self.hash().as_bytes(), stored_hash.as_bytes())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// SHA-256 of `bytes`, lowercase hex (64 characters).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths (lengths are not
/// secret here: compare fixed-size values such as hashes or MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}
