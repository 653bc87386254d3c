//! Config loading shared by the binaries. Each has one `Settings` struct that is both its clap
//! arguments (flags and `WAYPOST_*` environment) and its TOML file's shape, and layers them:
//! defaults < file < environment < flags. This module has the steps that do not depend on
//! the binary: parsing the command line ([`parse_args`]), reading the file ([`read_toml`]),
//! and the check that each setting's documented default is the one applied
//! ([`documented_defaults`]).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config that cannot be loaded. Binaries print it on one line and exit with code 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this binary (unknown keys are errors, to catch typos).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The exit code for a bad configuration (`EX_USAGE` in sysexits.h).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Parses a command line (`args` as from `std::env::args_os`). `--help` and `--version`
/// print and exit, as clap does; any other error is [`ConfigError::Invalid`], so that the
/// binary reports it like every other bad setting.
pub fn parse_args<C, I, T>(args: I) -> Result<C, ConfigError>
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    C::try_parse_from(args).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => e.exit(),
        _ => ConfigError::Invalid(e.to_string().trim().to_owned()),
    })
}

/// Every flag of `command` whose help ends with `[default: VALUE]`, with that value: the
/// one place a default is written for people. Binaries test that giving the flag this value
/// changes nothing, and that the README's table says the same, so the value in the help, the
/// one applied and the documented one cannot drift apart.
pub fn documented_defaults(command: &clap::Command) -> Vec<(String, String)> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let help = arg.get_long_help().or(arg.get_help())?.to_string();
            let (_, tail) = help.rsplit_once("[default: ")?;
            let value = tail.strip_suffix(']')?;
            Some((long.to_owned(), value.to_owned()))
        })
        .collect()
}

/// For each binary's tests: every documented default (see [`documented_defaults`]) is the one
/// applied, and `readme`'s table row for the flag (`| \`key\` / \`--flag\` | env | default |`)
/// gives the same. `load` turns flags (and no file) into the binary's config. Defaults that
/// are words (`none`, `system roots`) are only checked against the README. Returns how many
/// defaults were checked, or the first disagreement.
pub fn check_documented_defaults<T, E>(
    command: &clap::Command,
    readme: &str,
    load: impl Fn(&[&str]) -> Result<T, E>,
) -> Result<usize, String>
where
    T: PartialEq + std::fmt::Debug,
    E: std::fmt::Display,
{
    let none = load(&[]).map_err(|e| format!("the defaults do not load: {e}"))?;
    let documented = documented_defaults(command);
    for (long, value) in &documented {
        let start = format!("| `{}` / `--{long}` |", long.replace('-', "_"));
        let row = readme
            .lines()
            .find(|l| l.starts_with(&start))
            .ok_or_else(|| format!("the README lacks the row {start}"))?;
        let cell = row.split('|').nth(3).unwrap_or_default().trim();
        if cell.trim_matches('`') != value {
            return Err(format!(
                "--{long}: the help says {value}, the README {cell}"
            ));
        }
        if value.contains(' ') || value == "none" {
            continue;
        }
        let flag = format!("--{long}");
        let given = load(&[&flag, value]).map_err(|e| format!("--{long} {value}: {e}"))?;
        if given != none {
            return Err(format!("--{long} {value} is not what applies without it"));
        }
    }
    Ok(documented.len())
}

/// Reads a TOML file into `T`; no path means `T::default()`.
pub fn read_toml<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// Parses TOML text into `T`.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, toml::de::Error> {
    toml::from_str(text)
}

/// Reads an optional duration written like `30s` or `250ms` in a TOML file. Use as
/// `#[serde(default, with = "waypost_runtime::config::opt_duration")]`.
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// The deserializer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A setting that must not show in logs or debug output (a token): its `Debug` and `Display`
/// print `[redacted]`; [`Secret::expose`] gives the value to the one place that sends it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}
