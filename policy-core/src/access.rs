use core::fmt;
use serde::{Deserialize, Serialize};

/// Repository access levels, ordered `Read < Write < Admin < Owner`, as in Gogs (its
/// `AccessModeOwner` is the repository's owner, or an owner of the organisation owning it).
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    Admin,
    Owner,
}

impl Access {
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
            Access::Owner => "owner",
        }
    }

    /// The level just below this one; `None` below `Read`.
    pub(crate) const fn below(self) -> Option<Access> {
        match self {
            Access::Read => None,
            Access::Write => Some(Access::Read),
            Access::Admin => Some(Access::Write),
            Access::Owner => Some(Access::Admin),
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
