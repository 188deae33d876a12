//! Policy levels and versions (`privileged`/`baseline`/`restricted`, `v1.N`/`latest`).

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// The newest policy version whose behaviour differs from the one before it.
///
/// `latest` and every `v1.N` above this evaluate exactly like `v1.37`, as upstream's
/// registry clamps any version newer than its newest check revision (`maxVersion`).
pub const MAX_VERSION_MINOR: u32 = 37;

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Level {
    /// Unrestricted: nothing is checked.
    #[default]
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Heavily restricted, current pod hardening best practices.
    Restricted,
}

impl Level {
    /// The label value: `privileged`, `baseline` or `restricted`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An unknown level string; the message is upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of privileged, baseline, restricted")]
pub struct ParseLevelError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for Level {
    type Err = ParseLevelError;

    /// Exact, case-sensitive match, as upstream's `api.ParseLevel`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(ParseLevelError {
                input: s.to_owned(),
            }),
        }
    }
}

/// A policy version: `latest` or `v1.N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// The newest behaviour of every check.
    #[default]
    Latest,
    /// `v1.N`. Any `N` parses; those above [`MAX_VERSION_MINOR`] behave like it.
    Minor(u32),
}

impl Version {
    /// The minor version whose check revisions are used (`latest` and future versions
    /// clamp to [`MAX_VERSION_MINOR`]).
    pub const fn effective_minor(self) -> u32 {
        match self {
            Version::Latest => MAX_VERSION_MINOR,
            Version::Minor(n) if n > MAX_VERSION_MINOR => MAX_VERSION_MINOR,
            Version::Minor(n) => n,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::Minor(n) => write!(f, "v1.{n}"),
        }
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A version string that is neither `latest` nor `v1.N`; the message is upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be \"latest\" or \"v1.x\"")]
pub struct ParseVersionError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for Version {
    type Err = ParseVersionError;

    /// `latest`, or `v1.N` with `N` a decimal without leading zeros (upstream's
    /// `^v1\.([0-9]|[1-9][0-9]*)$`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" {
            return Ok(Version::Latest);
        }
        let err = || ParseVersionError {
            input: s.to_owned(),
        };
        let digits = s.strip_prefix("v1.").ok_or_else(err)?;
        let well_formed = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !well_formed {
            return Err(err());
        }
        // Go's Atoi accepts any int64; a huge minor is simply "newer than everything".
        let n: i64 = digits.parse().map_err(|_| err())?;
        Ok(Version::Minor(u32::try_from(n).unwrap_or(u32::MAX)))
    }
}

/// A level at a version, e.g. `restricted:v1.30`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Policy {
    /// The level.
    pub level: Level,
    /// The version of the level's checks.
    pub version: Version,
}

impl Policy {
    /// A policy from its parts.
    pub const fn new(level: Level, version: Version) -> Self {
        Policy { level, version }
    }

    /// `privileged:latest`, the upstream default when no label is set.
    pub const PRIVILEGED: Policy = Policy::new(Level::Privileged, Version::Latest);
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}
