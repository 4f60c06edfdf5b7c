//! Pairing and resume tokens: 256 random bits, base64url without padding. Only SHA-256 hashes
//! are stored; comparison is constant-time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::CryptoRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Number of random bytes in a token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// A fresh token from `rng` (the engine's seeded ChaCha20 in the engine, the OS-seeded thread RNG
/// in the CLI). Only a cryptographically strong generator is accepted.
pub fn generate(rng: &mut impl CryptoRng) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh token from the thread-local RNG (ChaCha12, seeded and reseeded from the operating system).
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
        let mut rng = rand::rngs::ChaCha20Rng::seed_from_u64(1);
        let t = generate(&mut rng);
        assert_eq!(t.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), 32);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    /// Seeded tokens (the engine's) are the same ChaCha20 output as ever: the same seed gives
    /// the same tokens whatever version of the RNG crates builds them.
    #[test]
    fn seeded_tokens_do_not_change() {
        let mut rng = rand::rngs::ChaCha20Rng::seed_from_u64(1);
        assert_eq!(generate(&mut rng), "mjdEUEVgY57GcLehfUkrJz4HewqWvvWLp3YHeeVEVG4");
        assert_eq!(generate(&mut rng), "AA7-yHxXSewRV5EuDhcfYN6eU0E0iBmi3pnxQMWaQkw");
        let mut rng = rand::rngs::ChaCha20Rng::from_seed([7; 32]);
        assert_eq!(generate(&mut rng), "9ACSeFeq9kEU9WG6rLN5cIx5odwUdqtXMhakAgdkveU");
    }

    #[test]
    fn the_hash_is_sha_256() {
        assert_eq!(hex(&hash("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
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
