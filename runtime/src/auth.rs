//! Checking a broker's OSB basic-auth credentials: constant-time comparisons, and argon2 for
//! hashed passwords with the last verified credentials remembered (as a SHA-256 digest) so
//! the hash is not recomputed on every request.

use crate::manifest::Credentials;
use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// The digest of the credentials last verified against a password hash.
#[derive(Default)]
pub struct VerifiedCache {
    last: Mutex<Option<[u8; 32]>>,
}

/// Hashes `password` with argon2id and a random salt (a PHC string for `password_hash`).
///
/// # Errors
/// When hashing fails (it does not with the default parameters).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// Whether `presented` (`user:password`, as decoded from the header) matches `credentials`.
/// Argon2 runs on a blocking thread, so a flood of wrong passwords cannot stall the executor.
pub async fn verify(credentials: &Credentials, cache: &VerifiedCache, presented: Vec<u8>) -> bool {
    let Some(split) = presented.iter().position(|b| *b == b':') else {
        return false;
    };
    let (user, password) = (&presented[..split], &presented[split + 1..]);
    let user_ok = bool::from(user.ct_eq(credentials.username.as_bytes()));
    if let Some(expected) = &credentials.password {
        return user_ok & bool::from(password.ct_eq(expected.as_bytes()));
    }
    let Some(hash) = credentials.password_hash.clone() else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(&presented).into();
    let known = cache
        .last
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|d| bool::from(d.ct_eq(&digest)));
    if known {
        return true;
    }
    if !user_ok {
        return false;
    }
    let password = password.to_vec();
    let matches = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(&password, &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false);
    if matches {
        *cache.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(password: Option<&str>, hash: Option<String>) -> Credentials {
        Credentials {
            username: "u".into(),
            password: password.map(str::to_string),
            password_hash: hash,
        }
    }

    #[tokio::test]
    async fn clear_and_hashed_passwords() {
        let cache = VerifiedCache::default();
        let clear = credentials(Some("pw"), None);
        assert!(verify(&clear, &cache, b"u:pw".to_vec()).await);
        assert!(!verify(&clear, &cache, b"u:pW".to_vec()).await);
        assert!(!verify(&clear, &cache, b"v:pw".to_vec()).await);
        let hashed = credentials(None, Some(hash_password("secret").unwrap()));
        assert!(verify(&hashed, &cache, b"u:secret".to_vec()).await);
        assert!(
            verify(&hashed, &cache, b"u:secret".to_vec()).await,
            "from the cache"
        );
        assert!(!verify(&hashed, &cache, b"u:wrong".to_vec()).await);
        assert!(!verify(&hashed, &cache, b"x:secret".to_vec()).await);
        assert!(!verify(&hashed, &cache, b"no-colon".to_vec()).await);
    }
}
