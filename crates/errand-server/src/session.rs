//! The dashboard's login sessions, and the brake on token guessing.
//!
//! A session is a signed, expiring cookie, never the token itself:
//! `ID.EXPIRES.MAC`, where MAC is HMAC-SHA256 over `ID.EXPIRES` with a key
//! derived from the API token. Any server that shares the token accepts
//! it (many servers behind one balancer); changing the token ends every
//! session; logging out revokes the session's id until it would have
//! expired anyway (on the server that received the logout: other servers
//! still honour the cookie until it expires, at most `SESSION_LENGTH`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// How long a login lasts.
pub const SESSION_LENGTH: Duration = Duration::from_secs(12 * 3600);
/// Wrong tokens a client may try per window before it must wait.
const GUESSES_PER_WINDOW: u32 = 10;
const GUESS_WINDOW: Duration = Duration::from_secs(60);

type HmacSha256 = Hmac<Sha256>;

#[derive(Default)]
pub struct Sessions {
    /// Logged-out session ids, with when they would have expired.
    revoked: Mutex<HashMap<String, u64>>,
    /// Wrong tokens per client in the current window.
    guesses: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signer(token: &str) -> HmacSha256 {
    let mut derive = HmacSha256::new_from_slice(token.as_bytes()).expect("any key length");
    derive.update(b"errand dashboard session v1");
    let key = derive.finalize().into_bytes();
    HmacSha256::new_from_slice(&key).expect("any key length")
}

impl Sessions {
    /// A new session's cookie value.
    pub fn issue(&self, token: &str) -> String {
        let id = hex(&rand::random::<[u8; 16]>());
        let expires = now_secs() + SESSION_LENGTH.as_secs();
        let signed = format!("{id}.{expires}");
        let mut mac = signer(token);
        mac.update(signed.as_bytes());
        format!("{signed}.{}", hex(&mac.finalize().into_bytes()))
    }

    /// The session's id if `value` is a live session signed for `token`.
    pub fn check(&self, token: &str, value: &str) -> Option<String> {
        let (signed, mac_hex) = value.rsplit_once('.')?;
        let (id, expires) = signed.split_once('.')?;
        let mac_bytes = (0..mac_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(mac_hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let mut mac = signer(token);
        mac.update(signed.as_bytes());
        // Constant time: a forger learns nothing from how long it took.
        mac.verify_slice(&mac_bytes).ok()?;
        let expires: u64 = expires.parse().ok()?;
        if expires <= now_secs() {
            return None;
        }
        let revoked = self.revoked.lock().expect("never poisoned");
        (!revoked.contains_key(id)).then(|| id.to_owned())
    }

    /// Ends the session `value` names (if it is one).
    pub fn revoke(&self, token: &str, value: &str) {
        let Some(id) = self.check(token, value) else {
            return;
        };
        let now = now_secs();
        let mut revoked = self.revoked.lock().expect("never poisoned");
        revoked.retain(|_, expires| *expires > now);
        revoked.insert(id, now + SESSION_LENGTH.as_secs());
    }

    /// Whether `client` has used up its wrong guesses for now; if so, how
    /// long until it may try again.
    pub fn guessing_too_fast(&self, client: IpAddr) -> Option<Duration> {
        let guesses = self.guesses.lock().expect("never poisoned");
        let (count, since) = guesses.get(&client)?;
        let left = GUESS_WINDOW.checked_sub(since.elapsed())?;
        (*count >= GUESSES_PER_WINDOW).then_some(left)
    }

    /// `client` presented a wrong token.
    pub fn wrong_guess(&self, client: IpAddr) {
        let mut guesses = self.guesses.lock().expect("never poisoned");
        if guesses.len() > 10_000 {
            guesses.retain(|_, (_, since)| since.elapsed() < GUESS_WINDOW);
        }
        let entry = guesses.entry(client).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= GUESS_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// Compares two secrets in time that depends on neither their contents
/// nor their lengths: both are hashed to 32 bytes first.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_signed_for_its_token_and_ends_when_revoked() {
        let sessions = Sessions::default();
        let cookie = sessions.issue("secret");
        assert!(!cookie.contains("secret") && !cookie.contains(&hex(b"secret")));
        assert!(sessions.check("secret", &cookie).is_some());
        assert!(sessions.check("other token", &cookie).is_none());
        // A forged expiry breaks the signature.
        let (id, rest) = cookie.split_once('.').unwrap();
        let (_, mac) = rest.split_once('.').unwrap();
        let forged = format!("{id}.99999999999.{mac}");
        assert!(sessions.check("secret", &forged).is_none());
        sessions.revoke("secret", &cookie);
        assert!(sessions.check("secret", &cookie).is_none());
    }

    #[test]
    fn wrong_guesses_are_braked_per_client() {
        let sessions = Sessions::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..GUESSES_PER_WINDOW {
            assert!(sessions.guessing_too_fast(a).is_none());
            sessions.wrong_guess(a);
        }
        assert!(sessions.guessing_too_fast(a).is_some());
        assert!(sessions.guessing_too_fast(b).is_none());
    }

    #[test]
    fn secrets_compare_exactly_whatever_their_lengths() {
        assert!(same_secret(b"secret", b"secret"));
        assert!(!same_secret(b"secret", b"secreT"));
        assert!(!same_secret(b"secret", b"secret2"));
        assert!(!same_secret(b"", b"x"));
    }
}
