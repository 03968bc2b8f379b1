//! Who is calling: the SPIFFE-style identity `spiffe://<trust-domain>/<role>/<name>` carried
//! as a SAN URI in every Mission Control certificate.

use std::fmt;
use std::str::FromStr;

/// The roles a certificate can carry. Every RPC names the roles it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Operator,
    Worker,
    Brain,
    ControlPlane,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Operator,
        Role::Worker,
        Role::Brain,
        Role::ControlPlane,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Worker => "worker",
            Role::Brain => "brain",
            Role::ControlPlane => "control-plane",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("unknown role {0:?} (expected operator, worker, brain or control-plane)")]
    UnknownRole(String),
    #[error("identity {0:?} is not of the form spiffe://<trust-domain>/<role>/<name>")]
    Malformed(String),
    #[error("invalid {what} {value:?}: use 1-63 characters of a-z, 0-9, '.', '_' or '-'")]
    InvalidName { what: &'static str, value: String },
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(s.to_string()))
    }
}

/// A verified caller (or the subject of a certificate to issue).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub trust_domain: String,
    pub role: Role,
    pub name: String,
}

/// Checks a trust domain, host or worker name: short, lowercase, URI- and path-safe.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), IdentityError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && !value.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidName {
            what,
            value: value.to_string(),
        })
    }
}

impl Identity {
    pub fn new(trust_domain: &str, role: Role, name: &str) -> Result<Identity, IdentityError> {
        validate_name("trust domain", trust_domain)?;
        validate_name("name", name)?;
        Ok(Identity {
            trust_domain: trust_domain.to_string(),
            role,
            name: name.to_string(),
        })
    }

    pub fn uri(&self) -> String {
        format!("spiffe://{}/{}/{}", self.trust_domain, self.role, self.name)
    }

    pub fn parse_uri(uri: &str) -> Result<Identity, IdentityError> {
        let malformed = || IdentityError::Malformed(uri.to_string());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(malformed)?;
        let mut parts = rest.split('/');
        let (Some(td), Some(role), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        Identity::new(td, role.parse()?, name)
    }

    /// "operator/alice": how an identity appears as an actor in events.
    pub fn actor(&self) -> String {
        format!("{}/{}", self.role, self.name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let id = Identity::new("mc.local", Role::ControlPlane, "cp-1").unwrap();
        assert_eq!(id.uri(), "spiffe://mc.local/control-plane/cp-1");
        assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), id);
        for bad in [
            "https://mc.local/operator/a",
            "spiffe://mc.local/operator",
            "spiffe://mc.local/operator/a/b",
            "spiffe://mc.local/root/a",
            "spiffe://MC/operator/a",
            "spiffe://mc.local/operator/",
            "spiffe://mc.local/operator/a b",
        ] {
            assert!(Identity::parse_uri(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            "admin".parse::<Role>(),
            Err(IdentityError::UnknownRole(r)) if r == "admin"
        ));
    }
}
