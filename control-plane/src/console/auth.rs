//! Who is looking at the console. An operator signs in with a link — the one-time token
//! `mc up` prints, or a link signed with the console key (`mc console link --name alice`)
//! that expires — and gets a session: an HttpOnly, SameSite=Strict cookie signed with the
//! same key, so every replica that shares the key knows it. Every state-changing request
//! carries a CSRF token bound to the session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mc_common::Timestamp;
use ring::hmac;

/// The cookie holding a session.
pub const COOKIE: &str = "mc_session";
/// The header (or form field `_csrf`) a state-changing request carries.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Why a sign-in or a session was refused (shown to the person, never with the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "not signed in: open the link `mc up` printed, or ask for one with `mc console link --name <you>`"
    )]
    NoSession,
    #[error("this sign-in link is not valid (it was changed, or signed with another key)")]
    Forged,
    #[error("this sign-in link has expired; ask for a new one with `mc console link --name <you>`")]
    Expired,
    #[error(
        "this one-time sign-in link was already used or is unknown; ask for a new one with `mc console link --name <you>`"
    )]
    Used,
    #[error("the session has expired; sign in again")]
    SessionExpired,
    #[error("the request has no valid CSRF token; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    Invalid(String),
}

/// The console's signing key and its one-time tokens.
pub struct Auth {
    key: hmac::Key,
    session_ttl: Duration,
    one_time: Mutex<HashMap<String, (String, Timestamp)>>,
}

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    pub expires: Timestamp,
    /// The cookie's value, to which the CSRF token is bound.
    pub token: String,
}

fn check_name(name: &str) -> Result<(), Refused> {
    mc_common::identity::validate_name("name", name)
        .map_err(|e| Refused::Invalid(format!("name: {e}")))
}

impl Auth {
    /// `secret` must be at least 32 bytes.
    pub fn new(secret: &[u8], session_ttl: Duration) -> Result<Auth, String> {
        if secret.len() < 32 {
            return Err(format!(
                "the console key must be at least 32 bytes, it is {}",
                secret.len()
            ));
        }
        Ok(Auth {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            session_ttl,
            one_time: Mutex::new(HashMap::new()),
        })
    }

    /// A fresh random secret (for a key file or a single replica).
    pub fn random_secret() -> Vec<u8> {
        random_bytes(32)
    }

    fn sign(&self, parts: &[&str]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(p.as_bytes());
            ctx.update(&[0]);
        }
        hex::encode(ctx.sign().as_ref())
    }

    fn verify(&self, parts: &[&str], sig: &str) -> bool {
        let Ok(tag) = hex::decode(sig) else {
            return false;
        };
        let mut msg = Vec::new();
        for p in parts {
            msg.extend_from_slice(p.as_bytes());
            msg.push(0);
        }
        hmac::verify(&self.key, &msg, &tag).is_ok()
    }

    /// The query string of a sign-in link for `name`, valid until `expires`.
    pub fn link_query(&self, name: &str, expires: Timestamp) -> Result<String, Refused> {
        check_name(name)?;
        let exp = (expires.millis() / 1000).to_string();
        Ok(format!(
            "name={name}&exp={exp}&sig={}",
            self.sign(&["link", name, &exp])
        ))
    }

    /// A one-time sign-in token for `name` (what `mc up` prints), valid until `expires`.
    pub fn one_time_token(&self, name: &str, expires: Timestamp) -> Result<String, Refused> {
        check_name(name)?;
        let token = hex::encode(random_bytes(24));
        self.one_time
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), (name.to_string(), expires));
        Ok(token)
    }

    /// Checks a sign-in link's parameters and opens a session.
    pub fn sign_in(&self, q: &LoginQuery, now: Timestamp) -> Result<Session, Refused> {
        let name = if let Some(token) = &q.token {
            let mut map = self.one_time.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, (_, exp)| *exp > now);
            let (name, _) = map.remove(token).ok_or(Refused::Used)?;
            name
        } else {
            let (Some(name), Some(exp), Some(sig)) = (&q.name, &q.exp, &q.sig) else {
                return Err(Refused::Invalid(
                    "a sign-in link needs name, exp and sig (or token)".into(),
                ));
            };
            check_name(name)?;
            if !self.verify(&["link", name, exp], sig) {
                return Err(Refused::Forged);
            }
            let exp: i64 = exp.parse().map_err(|_| Refused::Forged)?;
            if exp.checked_mul(1000).is_none_or(|ms| ms <= now.millis()) {
                return Err(Refused::Expired);
            }
            name.clone()
        };
        Ok(self.session_for(&name, now))
    }

    fn session_for(&self, name: &str, now: Timestamp) -> Session {
        let ttl = i64::try_from(self.session_ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = Timestamp(now.millis().saturating_add(ttl));
        let exp = (expires.millis() / 1000).to_string();
        let sig = self.sign(&["session", name, &exp]);
        Session {
            name: name.to_string(),
            expires,
            token: format!("{name}.{exp}.{sig}"),
        }
    }

    /// The session a cookie value stands for.
    pub fn session(&self, cookie: &str, now: Timestamp) -> Result<Session, Refused> {
        let mut it = cookie.splitn(3, '.');
        let (Some(name), Some(exp), Some(sig)) = (it.next(), it.next(), it.next()) else {
            return Err(Refused::NoSession);
        };
        if check_name(name).is_err() || !self.verify(&["session", name, exp], sig) {
            return Err(Refused::NoSession);
        }
        let secs: i64 = exp.parse().map_err(|_| Refused::NoSession)?;
        let expires = Timestamp(secs.checked_mul(1000).ok_or(Refused::NoSession)?);
        if expires <= now {
            return Err(Refused::SessionExpired);
        }
        Ok(Session {
            name: name.to_string(),
            expires,
            token: cookie.to_string(),
        })
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, s: &Session) -> String {
        self.sign(&["csrf", &s.token])
    }

    pub fn check_csrf(&self, s: &Session, given: Option<&str>) -> Result<(), Refused> {
        match given {
            Some(t) if self.verify(&["csrf", &s.token], t) => Ok(()),
            _ => Err(Refused::Csrf),
        }
    }
}

/// A sign-in link's parameters: `token`, or `name`, `exp` (Unix seconds) and `sig`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct LoginQuery {
    pub token: Option<String>,
    pub name: Option<String>,
    pub exp: Option<String>,
    pub sig: Option<String>,
}

fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    // The system's random source failing is not something to go on without.
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system random source works");
    b
}

/// Reads a console key file (at least 32 bytes; surrounding whitespace ignored, so a hex or
/// base64 line works as well as raw bytes).
pub fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("console.key_file {}: {e}", path.display()))?;
    let trimmed = bytes.trim_ascii().to_vec();
    if trimmed.len() < 32 {
        return Err(format!(
            "console.key_file {}: the key must be at least 32 bytes, it is {}",
            path.display(),
            trimmed.len()
        ));
    }
    Ok(trimmed)
}

/// Writes a new random key file (0600) if none exists; returns the key.
pub fn ensure_key_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    if !path.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let key = hex::encode(Auth::random_secret());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        f.write_all(key.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    read_key_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(&[7u8; 32], Duration::from_secs(3600)).unwrap()
    }

    fn parse(q: &str) -> LoginQuery {
        let mut l = LoginQuery::default();
        for kv in q.split('&') {
            let (k, v) = kv.split_once('=').unwrap();
            let v = Some(v.to_string());
            match k {
                "name" => l.name = v,
                "exp" => l.exp = v,
                "sig" => l.sig = v,
                "token" => l.token = v,
                _ => {}
            }
        }
        l
    }

    #[test]
    fn a_signed_link_opens_a_session_until_it_expires() {
        let a = auth();
        let now = Timestamp(1_000_000_000);
        let q = parse(&a.link_query("alice", Timestamp(now.0 + 60_000)).unwrap());
        let s = a.sign_in(&q, now).unwrap();
        assert_eq!(s.name, "alice");
        assert_eq!(a.session(&s.token, now).unwrap().name, "alice");
        assert_eq!(
            a.sign_in(&q, Timestamp(now.0 + 61_000)),
            Err(Refused::Expired)
        );
        assert_eq!(
            a.session(&s.token, Timestamp(now.0 + 3_601_000)),
            Err(Refused::SessionExpired)
        );
    }

    #[test]
    fn a_changed_or_foreign_link_is_forged() {
        let a = auth();
        let now = Timestamp(1_000_000_000);
        let q = a.link_query("alice", Timestamp(now.0 + 60_000)).unwrap();
        let mut as_bob = parse(&q);
        as_bob.name = Some("bob".into());
        assert_eq!(a.sign_in(&as_bob, now), Err(Refused::Forged));
        let mut later = parse(&q);
        later.exp = Some("99999999999".into());
        assert_eq!(a.sign_in(&later, now), Err(Refused::Forged));
        let other = Auth::new(&[8u8; 32], Duration::from_secs(60)).unwrap();
        assert_eq!(other.sign_in(&parse(&q), now), Err(Refused::Forged));
        let mut junk = parse(&q);
        junk.sig = Some("zz".into());
        assert_eq!(a.sign_in(&junk, now), Err(Refused::Forged));
        assert!(matches!(
            a.sign_in(&parse("name=al/ice&exp=1&sig=00"), now),
            Err(Refused::Invalid(_))
        ));
    }

    #[test]
    fn a_one_time_token_works_once() {
        let a = auth();
        let now = Timestamp(1_000_000_000);
        let t = a.one_time_token("local", Timestamp(now.0 + 1000)).unwrap();
        let q = LoginQuery {
            token: Some(t),
            ..Default::default()
        };
        assert_eq!(a.sign_in(&q, now).unwrap().name, "local");
        assert_eq!(a.sign_in(&q, now), Err(Refused::Used));
        let late = LoginQuery {
            token: Some(a.one_time_token("local", Timestamp(now.0 + 1000)).unwrap()),
            ..Default::default()
        };
        assert_eq!(
            a.sign_in(&late, Timestamp(now.0 + 2000)),
            Err(Refused::Used)
        );
    }

    #[test]
    fn sessions_and_csrf_tokens_cannot_be_made_up() {
        let a = auth();
        let now = Timestamp(1_000_000_000);
        let s = a.session_for("alice", now);
        let forged = s.token.replacen("alice", "bob", 1);
        assert_eq!(a.session(&forged, now), Err(Refused::NoSession));
        assert_eq!(a.session("garbage", now), Err(Refused::NoSession));
        assert_eq!(a.session("a.b.c.d", now), Err(Refused::NoSession));
        let csrf = a.csrf(&s);
        assert!(a.check_csrf(&s, Some(&csrf)).is_ok());
        assert_eq!(a.check_csrf(&s, None), Err(Refused::Csrf));
        assert_eq!(a.check_csrf(&s, Some("00")), Err(Refused::Csrf));
        let other = a.session_for("bob", now);
        assert_eq!(a.check_csrf(&other, Some(&csrf)), Err(Refused::Csrf));
    }
}
