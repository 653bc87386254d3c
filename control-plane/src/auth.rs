//! Who may do what: bearer tokens from the config file, each with a role.
//!
//! The file holds only SHA-256 digests of tokens (`waypost-control hash-token` prints one), so
//! reading the file or a backup of it does not give anyone a token. A presented token is
//! hashed and compared with every configured digest in constant time, without stopping at the
//! first match, so neither the comparison nor the position of a match shows in the timing.
//! Tokens and digests never reach a log: tokens are known here only by their `name`.
//!
//! Roles:
//! - `operator`: everything;
//! - `read`: discover, services, watch and metrics;
//! - `service`: reads too (a service discovers its dependencies), and writes (register,
//!   heartbeat, deregister, drain, check reports) only for the services its `services` list
//!   names: exact names, prefixes ending in `*` (`billing-*`), or `*` for every service;
//! - `cluster`: what one control plane sends another (Raft messages, forwarded writes, reads
//!   and heartbeats under `/cluster/...`), and reads; no writes through the public API;
//! - `sidecar`: what a sidecar needs and no more: reads, its reports (`PUT /nodes/{node}`),
//!   check results for any service (it checks the instances of its node), and deregistering
//!   an instance whose check is not passing (`deregister_critical_after`); it cannot register,
//!   heartbeat or drain.

use std::{fmt, sync::Arc};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The `[auth]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The tokens; authorization is on when there is at least one.
    #[serde(default)]
    pub tokens: Vec<TokenSettings>,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// A label for logs and errors (never the token).
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// What the token allows.
    pub role: Role,
    /// For `role = "service"`: the services it may write.
    #[serde(default)]
    pub services: Vec<String>,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Operator,
    /// Reads only.
    Read,
    /// Reads, and writes for its services.
    Service,
    /// Control-plane peers: the internal `/cluster/...` routes, and reads.
    Cluster,
    /// Sidecars: reads, node reports, check results, deregistering failing instances.
    Sidecar,
}

/// Services a service token may write: exact names and prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Exact(String),
    Prefix(String),
}

impl Scope {
    fn parse(text: &str) -> Result<Self, String> {
        let scope = match text.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(text.to_owned()),
        };
        let body = match &scope {
            Self::Exact(s) | Self::Prefix(s) => s,
        };
        let ok = body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok || matches!(&scope, Self::Exact(s) if s.is_empty()) {
            return Err(format!(
                "{text:?} is not a service name, a prefix ending in '*', or '*'"
            ));
        }
        Ok(scope)
    }

    fn covers(&self, service: &str) -> bool {
        match self {
            Self::Exact(name) => name == service,
            Self::Prefix(prefix) => service.starts_with(prefix.as_str()),
        }
    }
}

/// The caller a request was authenticated as.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authorization is off: everything is allowed.
    Anyone,
    /// A configured token.
    Token(Arc<Token>),
}

/// A configured token, without its digest.
#[derive(Debug)]
pub struct Token {
    /// Its label.
    pub name: String,
    /// Its role.
    pub role: Role,
    scopes: Vec<Scope>,
}

/// Why a caller may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token {token:?} ({role}) may not {action}")]
pub struct Denied {
    /// The token's label.
    pub token: String,
    /// Its role, as written in the config.
    pub role: &'static str,
    /// What was refused.
    pub action: String,
}

impl Caller {
    /// Whether this caller may change instances of `service`.
    pub fn may_write(&self, service: &str) -> Result<(), Denied> {
        let Self::Token(token) = self else {
            return Ok(());
        };
        let allowed = match token.role {
            Role::Operator => true,
            Role::Read | Role::Cluster | Role::Sidecar => false,
            Role::Service => token.scopes.iter().any(|s| s.covers(service)),
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                token: token.name.clone(),
                role: token.role.as_str(),
                action: format!("change instances of service {service:?}"),
            })
        }
    }

    /// Whether this caller may report health check results for `service`: those who may
    /// write it, and sidecars.
    pub fn may_report_check(&self, service: &str) -> Result<(), Denied> {
        match self {
            Self::Token(token) if token.role == Role::Sidecar => Ok(()),
            _ => self.may_write(service),
        }
    }

    /// Whether this caller may report a sidecar (`PUT /nodes/{node}`): sidecars and
    /// operators.
    pub fn may_report_node(&self) -> Result<(), Denied> {
        match self {
            Self::Token(token) if !matches!(token.role, Role::Sidecar | Role::Operator) => {
                Err(Denied {
                    token: token.name.clone(),
                    role: token.role.as_str(),
                    action: "report a sidecar".to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// `true` for a sidecar's token: it may deregister only instances whose check fails.
    pub fn is_sidecar(&self) -> bool {
        matches!(self, Self::Token(token) if token.role == Role::Sidecar)
    }

    /// The token's label (empty with authorization off).
    pub fn token_name(&self) -> &str {
        match self {
            Self::Token(token) => &token.name,
            Self::Anyone => "",
        }
    }

    /// Whether this caller may write at all (some service, or any): checked before the body
    /// is read, so that a read token's write is refused without parsing it.
    pub fn may_write_some(&self) -> Result<(), Denied> {
        match self {
            Self::Token(token) if token.role == Role::Read => Err(Denied {
                token: token.name.clone(),
                role: token.role.as_str(),
                action: "write".to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether this caller may use the routes between control planes (`cluster` or
    /// `operator` tokens; anyone when authorization is off).
    pub fn may_peer(&self) -> Result<(), Denied> {
        match self {
            Self::Token(token) if !matches!(token.role, Role::Cluster | Role::Operator) => {
                Err(Denied {
                    token: token.name.clone(),
                    role: token.role.as_str(),
                    action: "call the routes between control planes".to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether this caller may set a service's protection policy (`operator` only).
    pub fn may_set_policy(&self) -> Result<(), Denied> {
        match self {
            Self::Token(token) if token.role != Role::Operator => Err(Denied {
                token: token.name.clone(),
                role: token.role.as_str(),
                action: "set a service's protection policy".to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether this caller may change the cluster's membership (`operator` only).
    pub fn may_operate(&self) -> Result<(), Denied> {
        match self {
            Self::Token(token) if token.role != Role::Operator => Err(Denied {
                token: token.name.clone(),
                role: token.role.as_str(),
                action: "change the cluster's membership".to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

impl Role {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Read => "read",
            Self::Service => "service",
            Self::Cluster => "cluster",
            Self::Sidecar => "sidecar",
        }
    }
}

/// The configured tokens, ready to check requests against.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Arc<Token>)>,
}

impl fmt::Debug for Tokens {
    // Digests are not secrets, but nothing about tokens needs to be in a debug dump.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(_, t)| t.name.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl PartialEq for Tokens {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((a, _), (b, _))| a == b)
    }
}

impl Tokens {
    /// Checks and converts the `[auth]` table.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, String> {
        let mut entries: Vec<([u8; 32], Arc<Token>)> = Vec::new();
        for t in &settings.tokens {
            let digest = parse_digest(&t.sha256)
                .ok_or_else(|| format!("auth token {:?}: sha256 must be 64 hex digits (see `waypost-control hash-token`)", t.name))?;
            if entries.iter().any(|(_, e)| e.name == t.name) {
                return Err(format!("auth token {:?}: the name is used twice", t.name));
            }
            if entries.iter().any(|(d, _)| *d == digest) {
                return Err(format!(
                    "auth token {:?}: the same token is configured twice",
                    t.name
                ));
            }
            let scopes = t
                .services
                .iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("auth token {:?}: {e}", t.name))?;
            match (t.role, scopes.is_empty()) {
                (Role::Service, true) => {
                    return Err(format!(
                        "auth token {:?}: a service token needs `services`",
                        t.name
                    ));
                }
                (Role::Operator | Role::Read | Role::Sidecar, false) => {
                    return Err(format!(
                        "auth token {:?}: `services` applies only to role = \"service\"",
                        t.name
                    ));
                }
                _ => {}
            }
            entries.push((
                digest,
                Arc::new(Token {
                    name: t.name.clone(),
                    role: t.role,
                    scopes,
                }),
            ));
        }
        Ok(Self { entries })
    }

    /// Whether authorization is on.
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The token `presented` is, if any.
    pub fn find(&self, presented: &str) -> Option<Arc<Token>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        // Every entry is compared, so the time does not depend on where (or whether) it matched.
        for (configured, token) in &self.entries {
            if bool::from(configured.ct_eq(&digest)) {
                found = Some(token.clone());
            }
        }
        found
    }
}

/// The hex SHA-256 of `token`, as the config file wants it.
pub fn hash_token(token: &str) -> String {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(entries: &[(&str, Role, &[&str])]) -> Tokens {
        Tokens::from_settings(&AuthSettings {
            tokens: entries
                .iter()
                .map(|(secret, role, services)| TokenSettings {
                    name: format!("{secret}-name"),
                    sha256: hash_token(secret),
                    role: *role,
                    services: services.iter().map(|s| (*s).to_owned()).collect(),
                })
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn tokens_are_found_by_their_secret_only() {
        let t = tokens(&[("op", Role::Operator, &[]), ("ro", Role::Read, &[])]);
        assert_eq!(t.find("op").unwrap().role, Role::Operator);
        assert_eq!(t.find("ro").unwrap().role, Role::Read);
        assert!(t.find("other").is_none());
        assert!(
            t.find(&hash_token("op")).is_none(),
            "the digest is not the token"
        );
    }

    #[test]
    fn service_scopes_cover_names_and_prefixes() {
        let t = tokens(&[("svc", Role::Service, &["payments", "billing-*"])]);
        let caller = Caller::Token(t.find("svc").unwrap());
        assert!(caller.may_write("payments").is_ok());
        assert!(caller.may_write("billing-eu").is_ok());
        assert!(caller.may_write("payments-v2").is_err());
        assert!(caller.may_write("billing").is_err());
        assert!(caller.may_write_some().is_ok());
        let all = tokens(&[("all", Role::Service, &["*"])]);
        assert!(
            Caller::Token(all.find("all").unwrap())
                .may_write("x")
                .is_ok()
        );
        let read = tokens(&[("ro", Role::Read, &[])]);
        let reader = Caller::Token(read.find("ro").unwrap());
        assert!(reader.may_write("payments").is_err());
        assert!(reader.may_write_some().is_err());
    }

    #[test]
    fn bad_settings_are_refused() {
        let one = |sha256: &str, role, services: &[&str]| {
            Tokens::from_settings(&AuthSettings {
                tokens: vec![TokenSettings {
                    name: "t".into(),
                    sha256: sha256.into(),
                    role,
                    services: services.iter().map(|s| (*s).to_owned()).collect(),
                }],
            })
        };
        let good = hash_token("x");
        assert!(one(&good, Role::Service, &["a"]).is_ok());
        assert!(one("abc", Role::Operator, &[]).is_err());
        assert!(one(&good.replace('a', "g"), Role::Operator, &[]).is_err());
        assert!(one(&good, Role::Service, &[]).is_err());
        assert!(one(&good, Role::Read, &["a"]).is_err());
        assert!(one(&good, Role::Service, &["Payments"]).is_err());
        assert!(one(&good, Role::Service, &["a*b"]).is_err());
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
