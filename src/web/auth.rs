//! Basic authentication against `basic_auth_users` (username: bcrypt hash).
//!
//! bcrypt is slow on purpose (tens of milliseconds at the usual cost), so a scraper's password
//! is hashed once and the answer remembered, as exporter-toolkit does; and hashing runs on the
//! blocking pool one at a time, so a flood of wrong passwords costs one core at most and never
//! the threads that serve scrapes. Remembered answers are keyed by a SHA-256 of user, hash and
//! password, never the password itself; refusals are kept apart from acceptances so that a
//! flood of wrong passwords cannot push a scraper's remembered acceptance out.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper::header::HeaderValue;
use lru::LruCache;
use tokio::sync::Semaphore;

/// Remembered answers of each kind.
const REMEMBERED: NonZeroUsize = NonZeroUsize::new(256).expect("non-zero");

/// The users of a configuration: name → bcrypt hash, each checked to be one.
#[derive(Default)]
pub struct Users {
    hashes: BTreeMap<String, String>,
    /// The costliest hash, which a password given for an unknown user is checked against: so
    /// that it takes at least as long as for any user, and timing does not tell who exists.
    decoy: Option<String>,
}

impl Users {
    /// Checks every hash; the error names the user, never the hash.
    pub(super) fn new(hashes: BTreeMap<String, String>) -> Result<Users, String> {
        let mut decoy: Option<(u32, &String)> = None;
        for (name, hash) in &hashes {
            let cost = bcrypt::HashParts::from_str(hash)
                .map_err(|e| format!("basic_auth_users.{name}: not a bcrypt hash ({e})"))?
                .get_cost();
            if !(4..=31).contains(&cost) {
                return Err(format!("basic_auth_users.{name}: bcrypt cost {cost} is outside 4..31"));
            }
            if decoy.is_none_or(|(highest, _)| cost > highest) {
                decoy = Some((cost, hash));
            }
        }
        let decoy = decoy.map(|(_, hash)| hash.clone());
        Ok(Users { hashes, decoy })
    }

    /// No users: basic auth is off.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

type Key = [u8; 32];

/// Checks credentials, remembering recent answers.
pub struct Gate {
    accepted: Mutex<LruCache<Key, ()>>,
    refused: Mutex<LruCache<Key, ()>>,
    hashing: Arc<Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            accepted: Mutex::new(LruCache::new(REMEMBERED)),
            refused: Mutex::new(LruCache::new(REMEMBERED)),
            hashing: Arc::new(Semaphore::new(1)),
        }
    }
}

impl Gate {
    /// Whether the request's `Authorization` header names one of `users` with its password.
    pub async fn admits(&self, users: &Users, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else { return false };
        let (hash, known) = match (users.hashes.get(&user), &users.decoy) {
            (Some(hash), _) => (hash.clone(), true),
            (None, Some(decoy)) => (decoy.clone(), false),
            (None, None) => return false,
        };
        let key = key(&user, &hash, &password);
        if self.accepted.lock().expect("auth cache lock").get(&key).is_some() {
            return known;
        }
        if self.refused.lock().expect("auth cache lock").get(&key).is_some() {
            return false;
        }
        let permit = self.hashing.clone().acquire_owned().await.expect("the semaphore is never closed");
        // The permit moves into the blocking task: it is released when hashing ends, even if
        // the request that asked is gone by then.
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(&password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let admitted = matches && known;
        let cache = if admitted { &self.accepted } else { &self.refused };
        cache.lock().expect("auth cache lock").put(key, ());
        admitted
    }
}

/// `Basic base64(user:password)` → (user, password). The password is kept as bytes: bcrypt
/// takes any.
fn basic_credentials(header: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let text = header.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn key(user: &str, hash: &str, password: &[u8]) -> Key {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user.as_bytes(), hash.as_bytes(), password] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[tokio::test]
    async fn checks_passwords_and_remembers_answers() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = Users::new(BTreeMap::from([("prometheus".to_string(), hash)])).unwrap();
        let gate = Gate::default();
        assert!(gate.admits(&users, Some(&header("prometheus", "s3cret"))).await);
        assert!(gate.admits(&users, Some(&header("prometheus", "s3cret"))).await, "remembered");
        assert!(!gate.admits(&users, Some(&header("prometheus", "wrong"))).await);
        assert!(!gate.admits(&users, Some(&header("prometheus", "wrong"))).await, "remembered");
        assert!(!gate.admits(&users, Some(&header("nobody", "s3cret"))).await, "unknown user");
        assert!(!gate.admits(&users, None).await);
        assert!(!gate.admits(&users, Some(&HeaderValue::from_static("Bearer abc"))).await);
        assert!(!gate.admits(&users, Some(&HeaderValue::from_static("Basic !!!"))).await);
        assert_eq!(gate.accepted.lock().unwrap().len(), 1);
    }

    #[test]
    fn unknown_users_are_checked_against_the_costliest_hash() {
        let cheap = bcrypt::hash("a", 4).unwrap();
        let dear = bcrypt::hash("b", 6).unwrap();
        let users = Users::new(BTreeMap::from([("a".to_string(), cheap), ("b".to_string(), dear.clone())])).unwrap();
        assert_eq!(users.decoy, Some(dear));
    }

    #[test]
    fn hashes_are_checked_and_never_shown() {
        let error =
            Users::new(BTreeMap::from([("alice".to_string(), "plaintext-password".to_string())])).err().unwrap();
        assert!(error.starts_with("basic_auth_users.alice: not a bcrypt hash"), "{error}");
        assert!(!error.contains("plaintext-password"), "{error}");
    }

    #[test]
    fn credentials_parse() {
        assert_eq!(basic_credentials(&header("a", "b:c")), Some(("a".to_string(), b"b:c".to_vec())));
        assert_eq!(basic_credentials(&header("a", "")), Some(("a".to_string(), Vec::new())));
        let lower = HeaderValue::from_str(&header("a", "b").to_str().unwrap().replace("Basic", "basic")).unwrap();
        assert_eq!(basic_credentials(&lower), Some(("a".to_string(), b"b".to_vec())));
    }
}
