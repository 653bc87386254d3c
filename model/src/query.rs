//! The query parameters of the read endpoints, parsed exactly as [`crate::syntax`] writes them
//! in the OpenAPI document.

use std::time::Duration;

use crate::{
    Revision, limits::MAX_QUERY_REVISION, name::check_metadata_key, syntax::EPOCH_HEX_DIGITS,
};

/// Parses a blocking query's `wait`: seconds (`30`), or whole numbers with units `ms`, `s`,
/// `m`, `h` (`30s`, `5m`, `1m30s`, `250ms`). Large values saturate; the caller cuts the result
/// to the longest wait allowed.
pub fn parse_wait(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(saturating(s)));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n = saturating(&rest[..digits]);
        rest = &rest[digits..];
        let (millis, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(Duration::from_millis(n.saturating_mul(millis)));
    }
    Some(total)
}

/// A string of ASCII digits as a number, `u64::MAX` when it is larger.
fn saturating(digits: &str) -> u64 {
    digits.parse().unwrap_or(u64::MAX)
}

/// Parses a revision in a query (`index`, `since`): decimal digits, at most
/// [`MAX_QUERY_REVISION`] (the document's `int64`).
pub fn parse_revision(s: &str) -> Result<Revision, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a revision (a whole number)"));
    }
    match s.parse::<Revision>() {
        Ok(r) if r <= MAX_QUERY_REVISION => Ok(r),
        _ => Err(format!(
            "{s} is beyond the largest revision, {MAX_QUERY_REVISION} (int64)"
        )),
    }
}

/// Parses an epoch: 1 to 16 hex digits.
pub fn parse_epoch(s: &str) -> Option<crate::Epoch> {
    let ok = (1..=EPOCH_HEX_DIGITS).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| crate::Epoch::from_str_radix(s, 16).ok())
        .flatten()
}

/// Parses a `?meta=KEY:VALUE` filter into its key and value; the key is a metadata key, the
/// value anything (the first `:` ends the key).
pub fn parse_meta_filter(s: &str) -> Option<(&str, &str)> {
    let (key, value) = s.split_once(':')?;
    check_metadata_key(key).ok()?;
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_as_seconds_or_durations() {
        let s = Duration::from_secs;
        assert_eq!(parse_wait("30"), Some(s(30)));
        assert_eq!(parse_wait("30s"), Some(s(30)));
        assert_eq!(parse_wait("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_wait("10m"), Some(s(600)));
        assert_eq!(parse_wait("1m30s"), Some(s(90)));
        assert_eq!(parse_wait("2h"), Some(s(7200)));
        assert_eq!(parse_wait("0"), Some(Duration::ZERO));
        assert!(parse_wait("99999999999999999999999h").is_some());
        for bad in ["", "soon", "5 m", "m", "5x", "1.5s", "-5s", "+5", "5min"] {
            assert_eq!(parse_wait(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn revisions_are_int64() {
        assert_eq!(parse_revision("0"), Ok(0));
        assert_eq!(
            parse_revision("9223372036854775807"),
            Ok(MAX_QUERY_REVISION)
        );
        for bad in [
            "",
            "x",
            "+1",
            "-1",
            "1.0",
            "9223372036854775808",
            "99999999999999999999999",
        ] {
            assert!(parse_revision(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn epochs_and_meta_filters() {
        assert_eq!(parse_epoch("00000000000000ab"), Some(0xab));
        assert_eq!(parse_epoch("AB"), Some(0xab));
        assert_eq!(parse_epoch("+ab"), None);
        assert_eq!(parse_epoch("00000000000000abc"), None);
        assert_eq!(parse_meta_filter("zone:a"), Some(("zone", "a")));
        assert_eq!(
            parse_meta_filter("url:http://x:1"),
            Some(("url", "http://x:1"))
        );
        assert_eq!(parse_meta_filter("zone:"), Some(("zone", "")));
        assert_eq!(parse_meta_filter("zone"), None);
        assert_eq!(parse_meta_filter(":a"), None);
        assert_eq!(parse_meta_filter("a b:c"), None);
    }
}
