//! Credentials for external systems, as a connector receives them inside a run: secret types
//! that print nothing of themselves.

use std::fmt;

use secrecy::SecretString;

/// What an account holds.
#[derive(Clone)]
pub enum Credential {
    /// A user name and password (HTTP Basic, for example a CardDAV server).
    Basic {
        username: String,
        password: SecretString,
    },
    /// An API key or bearer token.
    ApiKey { key: SecretString },
}

impl Credential {
    /// `basic` or `api-key`.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Basic { .. } => "basic",
            Credential::ApiKey { .. } => "api-key",
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, redacted)", self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_part_of_it() {
        let c = Credential::Basic {
            username: "ann".into(),
            password: "hunter2-but-longer".to_owned().into(),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("ann") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
