//! Validated names. A [`ServiceName`] is an RFC 1123 label because the sidecar serves it as
//! one; an [`InstanceId`] is opaque but restricted to characters that are safe in URLs, logs
//! and store keys. Both are `Arc<str>` inside, since the registry clones them into indexes and
//! change events.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    limits::{
        MAX_INSTANCE_ID_LEN, MAX_METADATA_KEY_LEN, MAX_NODE_LEN, MAX_SERVICE_NAME_LEN, MAX_TAG_LEN,
    },
    syntax::{ID_EXTRA_CHARS, KEY_EXTRA_CHARS},
};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("must not be empty")]
    Empty,
    /// The name is longer than its limit.
    #[error("is {len} characters long; the limit is {max}")]
    TooLong {
        /// Length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside the allowed set.
    #[error("contains {0:?}; allowed are {1}")]
    BadChar(char, &'static str),
    /// A label that starts or ends with a hyphen.
    #[error("must not start or end with '-'")]
    EdgeHyphen,
}

/// A service name: an RFC 1123 label of lowercase letters, digits and hyphens, 1 to 63
/// characters, not starting or ending with a hyphen.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "user-service", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
pub struct ServiceName(Arc<str>);

impl ServiceName {
    /// Validates `name` as a service name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_label(name, MAX_SERVICE_NAME_LEN, false)?;
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An instance id, unique within its service: 1 to 259 characters
/// ([`MAX_INSTANCE_ID_LEN`]) from letters, digits and `- _ . : @ [ ]` (so that a derived
/// `host:port` or `[::1]:8080` id is valid).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "10.0.0.7:8001"))]
pub struct InstanceId(Arc<str>);

const ID_CHARS: &str = "letters, digits and - _ . : @ [ ]";

impl InstanceId {
    /// Validates `id` as an instance id.
    pub fn new(id: &str) -> Result<Self, NameError> {
        if id.is_empty() {
            return Err(NameError::Empty);
        }
        if id.len() > MAX_INSTANCE_ID_LEN {
            return Err(NameError::TooLong {
                len: id.len(),
                max: MAX_INSTANCE_ID_LEN,
            });
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ID_EXTRA_CHARS.contains(*c)))
        {
            return Err(NameError::BadChar(c, ID_CHARS));
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a tag: 1 to 63 characters of letters, digits, `-` and `_`, so that it can stand as a
/// DNS label in `<tag>.<service>.service.waypost.` (DNS compares it case-insensitively).
pub fn check_tag(tag: &str) -> Result<(), NameError> {
    check_label(tag, MAX_TAG_LEN, true)
}

/// Checks a metadata key: 1 to 128 letters, digits, `-`, `_` or `.`.
pub fn check_metadata_key(key: &str) -> Result<(), NameError> {
    check_word(key, MAX_METADATA_KEY_LEN)
}

/// Checks a node name: 1 to 253 letters, digits, `-`, `_` or `.`.
pub fn check_node(node: &str) -> Result<(), NameError> {
    check_word(node, MAX_NODE_LEN)
}

/// Checks a sidecar's version: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn check_version(version: &str) -> Result<(), NameError> {
    check_word(version, crate::limits::MAX_VERSION_LEN)
}

fn check_word(s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > max {
        return Err(NameError::TooLong { len: s.len(), max });
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || KEY_EXTRA_CHARS.contains(*c)))
    {
        Some(c) => Err(NameError::BadChar(c, "letters, digits, '-', '_' and '.'")),
        None => Ok(()),
    }
}

fn check_label(s: &str, max: usize, relaxed: bool) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > max {
        return Err(NameError::TooLong { len: s.len(), max });
    }
    let allowed: fn(char) -> bool = if relaxed {
        |c| c.is_ascii_alphanumeric() || c == '-' || c == '_'
    } else {
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    };
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        let what = if relaxed {
            "letters, digits, '-' and '_'"
        } else {
            "lowercase letters, digits and '-'"
        };
        return Err(NameError::BadChar(c, what));
    }
    if !relaxed && (s.starts_with('-') || s.ends_with('-')) {
        return Err(NameError::EdgeHyphen);
    }
    Ok(())
}

macro_rules! string_newtype {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $ty::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(ServiceName);
string_newtype!(InstanceId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_rfc_1123_labels() {
        for ok in ["a", "user-service", "s3", "0abc", &"a".repeat(63)] {
            assert!(ServiceName::new(ok).is_ok(), "{ok:?} should be valid");
        }
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            (
                "User",
                NameError::BadChar('U', "lowercase letters, digits and '-'"),
            ),
            (
                "a_b",
                NameError::BadChar('_', "lowercase letters, digits and '-'"),
            ),
            (
                "a.b",
                NameError::BadChar('.', "lowercase letters, digits and '-'"),
            ),
            ("-a", NameError::EdgeHyphen),
            ("a-", NameError::EdgeHyphen),
        ];
        for (bad, want) in cases {
            assert_eq!(ServiceName::new(bad).unwrap_err(), *want, "{bad:?}");
        }
        assert_eq!(
            ServiceName::new(&"a".repeat(64)).unwrap_err(),
            NameError::TooLong { len: 64, max: 63 }
        );
    }

    #[test]
    fn instance_ids_allow_endpoint_forms() {
        for ok in ["web-1", "10.0.0.1:80", "[::1]:8080", "pod@node_3"] {
            assert!(InstanceId::new(ok).is_ok(), "{ok:?}");
        }
        assert!(InstanceId::new("a b").is_err());
        assert!(InstanceId::new("a/b").is_err());
        assert!(InstanceId::new(&"x".repeat(MAX_INSTANCE_ID_LEN)).is_ok());
        assert!(InstanceId::new(&"x".repeat(MAX_INSTANCE_ID_LEN + 1)).is_err());
    }

    #[test]
    fn tags_are_label_sized() {
        assert!(check_tag("v1").is_ok());
        assert!(check_tag("Primary_DB").is_ok());
        assert!(check_tag("").is_err());
        assert!(check_tag("a.b").is_err());
        assert!(check_tag(&"t".repeat(64)).is_err());
    }

    #[test]
    fn names_deserialize_with_validation() {
        let ok: ServiceName = serde_json::from_str("\"db\"").unwrap();
        assert_eq!(ok.as_str(), "db");
        assert!(serde_json::from_str::<ServiceName>("\"DB\"").is_err());
    }
}
