//! OAuth 2.0 authorization-code grants with external apps (RFC 6749, PKCE per RFC 7636), over
//! the egress policy: the authorization URL a user is sent to, the code exchanged for tokens,
//! and tokens refreshed.
//!
//! - Every authorization request carries a PKCE `S256` challenge and the caller's `state`.
//! - An answer of `invalid_grant`, `invalid_client` or `unauthorized_client` is
//!   [`OAuthError::Refused`]: the grant (or the app) is gone, and asking again will not help;
//!   anything else (the token endpoint down, an answer that does not parse) is
//!   [`OAuthError::Unavailable`], worth another try later.
//! - Tokens and secrets stay in redacting types; errors name the kind of failure only.

use std::fmt;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AsyncHttpClient, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, TokenResponse as _, TokenUrl,
};
use sealsync_connector::ConnectorError;
use sealsync_connector::credential::OAuthApp;
use sealsync_connector::egress::{Egress, EgressPolicy, SendError};
use secrecy::{ExposeSecret as _, SecretString};

/// Why a token request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The app refused: the grant was revoked or expired, or the client is no longer valid.
    #[error("the app refused the grant ({0}): connect the account again")]
    Refused(String),
    /// The token endpoint could not be reached or answered nonsense.
    #[error("the app's token endpoint is unavailable: {0}")]
    Unavailable(String),
    #[error("OAuth configuration: {0}")]
    Config(String),
}

/// Tokens from an exchange or a refresh.
pub struct Tokens {
    pub access: SecretString,
    /// A new refresh token, when the app rotates them (keep it: the old one is spent).
    pub refresh: Option<SecretString>,
    /// Seconds until the access token expires, when the app said.
    pub expires_in: Option<Duration>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// A started authorization: where to send the user, and the PKCE verifier to keep for the
/// exchange.
pub struct Authorization {
    pub url: String,
    pub verifier: SecretString,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorization(…)")
    }
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// One external app's OAuth client, its requests going through the egress policy.
pub struct OAuthClient {
    client: Client,
    scopes: Vec<String>,
    http: Http,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// The client of `app`, sending users back to `redirect` (none: it only refreshes); its
    /// token endpoint must be allowed by `policy`.
    pub fn new(
        app: &OAuthApp,
        redirect: Option<&str>,
        policy: EgressPolicy,
    ) -> Result<Self, OAuthError> {
        let config = |what: &str| OAuthError::Config(format!("the {what} is not a valid URL"));
        let token_url = reqwest::Url::parse(&app.token_url).map_err(|_| config("token URL"))?;
        policy
            .check(&token_url)
            .map_err(|e| OAuthError::Config(format!("the token URL: {e}")))?;
        let auth =
            reqwest::Url::parse(&app.authorize_url).map_err(|_| config("authorization URL"))?;
        if !matches!(auth.scheme(), "https" | "http") {
            return Err(config("authorization URL"));
        }
        let mut client = BasicClient::new(ClientId::new(app.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                app.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(AuthUrl::from_url(auth))
            .set_token_uri(TokenUrl::from_url(token_url));
        if let Some(redirect) = redirect {
            client = client.set_redirect_uri(
                RedirectUrl::new(redirect.to_owned()).map_err(|_| config("redirect URL"))?,
            );
        }
        let egress = Egress::new(policy).map_err(|e| OAuthError::Config(e.to_string()))?;
        Ok(Self {
            client,
            scopes: app.scopes.clone(),
            http: Http(egress),
        })
    }

    /// Where to send the user, carrying `state` and a fresh PKCE challenge.
    pub fn authorize(&self, state: &str) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_owned();
        let mut request = self
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge);
        // OpenID Connect grants `offline_access` (a refresh token) only with consent asked.
        if self.scopes.iter().any(|s| s == "offline_access") {
            request = request.add_extra_param("prompt", "consent");
        }
        let (url, _) = request.url();
        Authorization {
            url: url.to_string(),
            verifier: SecretString::from(verifier.into_secret()),
        }
    }

    /// Exchanges an authorization code (with the verifier of its authorization) for tokens.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &SecretString,
    ) -> Result<Tokens, OAuthError> {
        let answer = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_owned()))
            .request_async(&self.http)
            .await;
        tokens(answer)
    }

    /// New tokens for a refresh token.
    pub async fn refresh(&self, refresh: &SecretString) -> Result<Tokens, OAuthError> {
        let token = RefreshToken::new(refresh.expose_secret().to_owned());
        let answer = self
            .client
            .exchange_refresh_token(&token)
            .request_async(&self.http)
            .await;
        tokens(answer)
    }
}

fn tokens<RE: std::error::Error + 'static>(
    answer: Result<
        oauth2::basic::BasicTokenResponse,
        RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
    >,
) -> Result<Tokens, OAuthError> {
    match answer {
        Ok(t) => Ok(Tokens {
            access: SecretString::from(t.access_token().secret().clone()),
            refresh: t
                .refresh_token()
                .map(|r| SecretString::from(r.secret().clone())),
            expires_in: t.expires_in(),
        }),
        Err(RequestTokenError::ServerResponse(e)) => match e.error() {
            BasicErrorResponseType::InvalidGrant
            | BasicErrorResponseType::InvalidClient
            | BasicErrorResponseType::UnauthorizedClient => {
                Err(OAuthError::Refused(e.error().to_string()))
            }
            other => Err(OAuthError::Unavailable(format!("the app answered {other}"))),
        },
        Err(RequestTokenError::Request(e)) => Err(OAuthError::Unavailable(e.to_string())),
        Err(RequestTokenError::Parse(..)) => Err(OAuthError::Unavailable(
            "the answer could not be read".into(),
        )),
        Err(RequestTokenError::Other(_)) => {
            Err(OAuthError::Unavailable("the answer was not a token".into()))
        }
    }
}

impl From<OAuthError> for ConnectorError {
    fn from(e: OAuthError) -> Self {
        match e {
            OAuthError::Unavailable(_) => ConnectorError::Unavailable(e.to_string()),
            OAuthError::Refused(_) | OAuthError::Config(_) => ConnectorError::Config(e.to_string()),
        }
    }
}

/// The egress client, as oauth2 calls it.
struct Http(Egress);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = SendError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let built = self
                .0
                .request(parts.method, &parts.uri.to_string())
                .map_err(SendError::Refused)?
                .headers(parts.headers)
                .body(body)
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|_| SendError::Http("the request cannot be built".into()))?;
            let resp = self.0.execute(built).await?;
            let mut out = HttpResponse::new(Vec::new());
            *out.status_mut() = resp.status();
            *out.headers_mut() = resp.headers().clone();
            *out.body_mut() = resp
                .bytes()
                .await
                .map_err(|e| sealsync_connector::egress::classify(&e))?
                .to_vec();
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealsync_connector::egress::AllowedAddr;

    fn app() -> OAuthApp {
        OAuthApp {
            client_id: "client-1".into(),
            client_secret: "a-client-secret-of-some-length".to_owned().into(),
            authorize_url: "https://id.example.com/authorize".into(),
            token_url: "https://id.example.com/token".into(),
            scopes: vec!["contacts".into(), "offline_access".into()],
            allow: vec![],
        }
    }

    #[test]
    fn authorization_urls_carry_state_pkce_and_scopes() {
        let c = OAuthClient::new(
            &app(),
            Some("https://sync.example.com/v1/oauth/callback"),
            EgressPolicy::allowing([]),
        )
        .unwrap();
        let a = c.authorize("the-state");
        let url = reqwest::Url::parse(&a.url).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "the-state");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["scope"], "contacts offline_access");
        assert_eq!(q["prompt"], "consent");
        assert!(q["code_challenge"].len() >= 43);
        assert!(!a.url.contains(a.verifier.expose_secret()));
        assert!(!format!("{a:?}{c:?}").contains("secret"));
    }

    #[test]
    fn a_private_token_endpoint_needs_allowing() {
        let mut private = app();
        private.token_url = "http://127.0.0.1:9/token".into();
        let err = OAuthClient::new(&private, None, EgressPolicy::allowing([])).unwrap_err();
        assert!(matches!(err, OAuthError::Config(_)), "{err}");
        let allowed = EgressPolicy::allowing(["127.0.0.1:9".parse::<AllowedAddr>().unwrap()]);
        assert!(OAuthClient::new(&private, None, allowed).is_ok());
    }
}
