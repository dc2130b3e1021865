use core::fmt;
use serde::{Deserialize, Serialize};

/// Repository access levels, ordered: `Read < Write < Admin`, as in Gogs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    Admin,
}

impl Access {
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }

    /// The level just below this one; `None` below `Read`.
    pub(crate) const fn below(self) -> Option<Access> {
        match self {
            Access::Read => None,
            Access::Write => Some(Access::Read),
            Access::Admin => Some(Access::Write),
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
