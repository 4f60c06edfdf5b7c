//! Pairing and resume tokens: 256 random bits, base64url without padding. Only SHA-256 hashes
//! are stored; comparison is constant-time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Number of random bytes in a token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// A fresh token from `rng` (the engine's seeded ChaCha20 in the engine, the OS RNG in the CLI).
pub fn generate(rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh token from the operating system's RNG.
pub fn generate_os() -> String {
    generate(&mut rand::rng())
}

/// SHA-256 of the token text.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time comparison of a presented token against a stored hash.
pub fn matches(token: &str, stored_hash: &[u8; 32]) -> bool {
    hash(token).ct_eq(stored_hash).into()
}

/// Lower-case hex of bytes (fingerprints, digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn tokens_are_256_bits_base64url() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let t = generate(&mut rng);
        assert_eq!(t.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), 32);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn only_the_right_token_matches_its_hash() {
        let h = hash("abc");
        assert!(matches("abc", &h));
        assert!(!matches("abd", &h));
        assert!(!matches("", &h));
    }

    #[test]
    fn os_tokens_differ() {
        assert_ne!(generate_os(), generate_os());
    }
}
