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
    /// An OAuth 2.0 client registered with an external app: what an authorization-code flow
    /// starts from.
    OAuthApp(OAuthApp),
    /// A grant from an OAuth app: the tokens an authorization-code flow gave.
    OAuth(OAuthGrant),
}

/// An external app's OAuth 2.0 client.
#[derive(Clone)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: SecretString,
    pub authorize_url: String,
    pub token_url: String,
    pub scopes: Vec<String>,
    /// Addresses reached although private or loopback (the token endpoint's).
    pub allow: Vec<String>,
}

/// The tokens of one grant.
#[derive(Clone)]
pub struct OAuthGrant {
    /// The name of the `oauth-app` account that issued it.
    pub app: String,
    pub access: SecretString,
    pub refresh: Option<SecretString>,
    /// When the access token expires (Unix seconds), when the app said.
    pub expires_at: Option<i64>,
}

impl Credential {
    /// `basic`, `api-key`, `oauth-app` or `oauth`.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Basic { .. } => "basic",
            Credential::ApiKey { .. } => "api-key",
            Credential::OAuthApp(_) => "oauth-app",
            Credential::OAuth(_) => "oauth",
        }
    }
}

impl fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthApp")
            .field("authorize_url", &self.authorize_url)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for OAuthGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthGrant")
            .field("app", &self.app)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
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
