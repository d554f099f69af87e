//! API tokens: random, shown once, stored only as a hash.

use flowform_store::{Result, StoreError};
use sha2::{Digest, Sha256};

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (256 bits).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("ff_{}", hex::encode(bytes))
}

/// Issues a token for an existing user through `add`, after `exists` confirms
/// the user. Returns the token in clear; only its hash is stored.
pub fn issue(user: &str, exists: impl FnOnce(&str) -> Result<bool>, add: impl FnOnce(&str, &str) -> Result<()>) -> Result<Option<String>> {
    if !exists(user)? {
        return Ok(None);
    }
    let token = generate();
    add(&hash(&token), user).map_err(|e| StoreError::Backend(format!("cannot store the token: {e}")))?;
    Ok(Some(token))
}
