//! Deserialisation rules of the request bodies, matching what the OpenAPI document declares:
//! optional fields may be left out but not sent as `null` (the document does not declare them
//! nullable), and integer fields take any JSON number JSON Schema counts as an integer,
//! `981.0` included.

use serde::{
    Deserialize, Deserializer,
    de::{Error, Unexpected, Visitor},
};

/// An optional field that, when present, holds a `T` (not `null`).
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// An unsigned integer field: a JSON integer, or a number with a zero fraction.
pub(crate) fn integer<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Unsigned,
{
    let n = d.deserialize_any(Integer)?;
    T::try_from(n).map_err(|_| {
        D::Error::invalid_value(
            Unexpected::Unsigned(n),
            &format!("a whole number from 0 to {}", T::MAX).as_str(),
        )
    })
}

/// [`integer`] for an optional field ([`present`]).
pub(crate) fn present_integer<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Unsigned,
{
    integer(d).map(Some)
}

/// The unsigned types [`integer`] fills.
pub(crate) trait Unsigned: TryFrom<u64> {
    /// The largest value.
    const MAX: u64;
}

impl Unsigned for u16 {
    const MAX: u64 = u16::MAX as u64;
}

impl Unsigned for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Unsigned for u64 {
    const MAX: u64 = u64::MAX;
}

struct Integer;

impl Visitor<'_> for Integer {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
        // 2^64 is exact as an f64; below it, an integral value converts exactly.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct T {
        #[serde(default, deserialize_with = "super::present_integer")]
        port: Option<u16>,
        #[serde(default, deserialize_with = "super::present")]
        name: Option<String>,
    }

    fn parse(json: &str) -> Result<T, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_numbers_are_integers() {
        for (json, port) in [
            (r#"{"port": 981}"#, 981),
            (r#"{"port": 981.0}"#, 981),
            (r#"{"port": 9.81e2}"#, 981),
            (r#"{"port": 65535.0}"#, 65535),
            (r#"{"port": -0.0}"#, 0),
        ] {
            assert_eq!(parse(json).unwrap().port, Some(port), "{json}");
        }
        for json in [
            r#"{"port": 981.5}"#,
            r#"{"port": -1}"#,
            r#"{"port": 65536}"#,
            r#"{"port": 1e300}"#,
            r#"{"port": "80"}"#,
            r#"{"port": null}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
    }

    #[test]
    fn optional_fields_may_be_absent_but_not_null() {
        assert_eq!(
            parse("{}").unwrap(),
            T {
                port: None,
                name: None
            }
        );
        assert!(parse(r#"{"name": null}"#).is_err());
        assert_eq!(
            parse(r#"{"name": "x"}"#).unwrap().name.as_deref(),
            Some("x")
        );
    }
}
