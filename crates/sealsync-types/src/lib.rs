//! Domain newtypes shared by every sealsync crate.
//!
//! Values here are parsed once at the edge ("parse, don't validate") and then carried as types:
//! a [`WorkspaceId`] is never confused with a [`ContactId`], a [`WorkspaceName`] is always a
//! valid slug. This crate does no I/O and holds no secrets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a value from outside could not become a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{what} is not a valid identifier")]
    Id { what: &'static str },
    #[error(
        "workspace name must be 1 to 63 characters of lowercase letters, digits, '-' or '_', \
         starting with a letter or digit"
    )]
    WorkspaceName,
    #[error("unknown role {0:?}: expected owner, admin, member or viewer")]
    Role(String),
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh identifier; time-ordered (UUIDv7) so that new rows append to indexes.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the canonical hyphenated form.
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseError::Id { what: $what })
            }

            /// The all-zero id, never generated.
            pub const NIL: Self = Self(Uuid::nil());

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    /// Identifies a workspace (tenant). The first column of every workspace-owned key.
    WorkspaceId,
    "workspace id"
);
uuid_id!(
    /// Identifies one contact in a workspace's hub.
    ContactId,
    "contact id"
);

uuid_id!(
    /// Identifies an endpoint: one external contact collection.
    EndpointId,
    "endpoint id"
);
uuid_id!(
    /// Identifies a link between an endpoint and the hub.
    LinkId,
    "link id"
);
uuid_id!(
    /// Identifies a connected account: credentials for an external system.
    AccountId,
    "account id"
);
uuid_id!(
    /// Identifies one run of a link.
    RunId,
    "run id"
);
uuid_id!(
    /// Identifies a user of the installation.
    UserId,
    "user id"
);
uuid_id!(
    /// Identifies one queued conflict.
    ConflictId,
    "conflict id"
);

/// A workspace's human name: a slug such as `default` or `sales-emea`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkspaceName(String);

impl WorkspaceName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && s.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::WorkspaceName)
        }
    }

    /// The workspace every installation starts with.
    pub fn default_workspace() -> Self {
        Self("default".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for WorkspaceName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for WorkspaceName {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<WorkspaceName> for String {
    fn from(n: WorkspaceName) -> Self {
        n.0
    }
}

/// A member's role in a workspace. Ordered: `Owner > Admin > Member > Viewer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Whether this role grants at least what `required` grants.
    pub fn at_least(self, required: Role) -> bool {
        self >= required
    }
}

impl FromStr for Role {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            _ => Err(ParseError::Role(s.to_owned())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = ContactId::new();
        assert_eq!(ContactId::parse(&id.to_string()), Ok(id));
        assert!(WorkspaceId::parse("not-a-uuid").is_err());
    }

    #[test]
    fn workspace_names_are_slugs() {
        assert!(WorkspaceName::parse("default").is_ok());
        assert!(WorkspaceName::parse("sales-emea_2").is_ok());
        for bad in ["", "-x", "Upper", "has space", "a/b", &"x".repeat(64)] {
            assert!(WorkspaceName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Owner.at_least(Role::Admin));
        assert!(Role::Admin.at_least(Role::Admin));
        assert!(!Role::Viewer.at_least(Role::Member));
        assert_eq!("ADMIN".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }
}
