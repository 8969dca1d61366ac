//! Creating and checking identities in the store: users, API keys, OAuth clients, tokens.
//!
//! Shared by the CLI and the API so both follow one set of rules. Secrets leave only as the
//! return value of the call that made them; what is stored is a hash (sealed, for client
//! secrets). argon2id work runs on a blocking thread, never on the async runtime.

use sealsync_crypto::{RecordRef, WorkspaceKeys};
use sealsync_store::{ApiKeyRow, ClientRow, Hub, StoreError, TokenRow, UserRow};
use sealsync_types::{Role, UserId, WorkspaceId};
use secrecy::SecretString;

use crate::credential::{ApiKeySecret, ClientCredentials, ClientId, KeyId, sha256};
use crate::jwt::{AUDIENCE, AccessClaims, TOKEN_LIFETIME_SECS, TokenKeys, now_secs};
use crate::password::{hash_password, verify_password};
use crate::policy::{Scope, ScopeSet};

/// Why an identity operation failed. Messages name no secret.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("a user with that email already exists")]
    UserExists,
    #[error("not a valid email address")]
    BadEmail,
    #[error("{0}")]
    BadScopes(String),
    #[error("{0}")]
    BadName(String),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("client authentication failed")]
    BadClient,
    #[error("scope not allowed for this client: {0}")]
    ScopeNotAllowed(String),
    #[error("secret generation or hashing failed")]
    Crypto,
    #[error(transparent)]
    Store(#[from] StoreError),
}

const CLIENTS: &str = "oauth_clients";

fn secret_ref(ws: WorkspaceId, id: &[u8; 16]) -> RecordRef<'_> {
    RecordRef {
        table: CLIENTS,
        workspace: ws,
        record: id,
        field: "secret",
    }
}

/// A display name for keys and clients: 1–100 printable characters.
pub fn check_name(name: &str) -> Result<(), DirectoryError> {
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(DirectoryError::BadName(
            "a name must be 1 to 100 printable characters".into(),
        ));
    }
    Ok(())
}

/// Normalises a login email (trimmed, lower-cased) or refuses it.
pub fn normalize_login(email: &str) -> Result<String, DirectoryError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(DirectoryError::BadEmail)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DirectoryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| DirectoryError::Crypto)
}

/// Adds a user (with a password, or none for single sign-on) and, when given, a membership.
pub async fn create_user(
    hub: &Hub,
    email: &str,
    password: Option<SecretString>,
    membership: Option<(WorkspaceId, Role)>,
) -> Result<UserRow, DirectoryError> {
    let email = normalize_login(email)?;
    if hub.store().user_by_email(&email).await?.is_some() {
        return Err(DirectoryError::UserExists);
    }
    let password_hash = match password {
        Some(pw) => Some(
            blocking(move || hash_password(&pw))
                .await?
                .map_err(|_| DirectoryError::Crypto)?,
        ),
        None => None,
    };
    let now = now_secs();
    let user = UserRow {
        id: UserId::new(),
        email,
        password_hash,
        created_at: now,
        disabled_at: None,
        failed_logins: 0,
        locked_until: None,
        totp_secret: None,
        totp_enabled_at: None,
        totp_last_step: None,
        recovery_codes: None,
    };
    hub.store()
        .insert_user(&user)
        .await
        .map_err(|_| DirectoryError::UserExists)?;
    if let Some((ws, role)) = membership {
        hub.store().put_member(ws, user.id, role, now).await?;
    }
    Ok(user)
}

/// Makes an API key for `user` in `ws`. Scopes are capped later by the user's role.
pub async fn create_api_key(
    hub: &Hub,
    ws: WorkspaceId,
    user: UserId,
    name: &str,
    scopes: &ScopeSet,
    expires_at: Option<i64>,
) -> Result<(ApiKeyRow, ApiKeySecret), DirectoryError> {
    check_name(name)?;
    if scopes.is_empty() {
        return Err(DirectoryError::BadScopes("give at least one scope".into()));
    }
    let secret = ApiKeySecret::generate().map_err(|_| DirectoryError::Crypto)?;
    let row = ApiKeyRow {
        id: *secret.id.as_bytes(),
        workspace_id: ws,
        user_id: user,
        name: name.to_owned(),
        key_hash: secret.hash,
        scopes: scopes.to_oauth(),
        created_at: now_secs(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    hub.store().insert_api_key(&row).await?;
    Ok((row, secret))
}

/// Parses the id of a key as listed.
pub fn parse_key_id(s: &str) -> Result<KeyId, DirectoryError> {
    KeyId::parse(s).map_err(|_| DirectoryError::NotFound("API key"))
}

/// Makes an OAuth client in `ws`; the secret is returned once.
pub async fn create_client(
    hub: &Hub,
    keys: &WorkspaceKeys,
    name: &str,
    scopes: &ScopeSet,
) -> Result<(ClientRow, ClientCredentials), DirectoryError> {
    check_name(name)?;
    if scopes.is_empty() {
        return Err(DirectoryError::BadScopes("give at least one scope".into()));
    }
    if let Some(s) = scopes.iter().find(|s| !s.grantable_to_client()) {
        return Err(DirectoryError::BadScopes(format!(
            "scope {s} cannot be given to an OAuth client"
        )));
    }
    let ws = keys.workspace();
    let client_id = ClientId::new(ws);
    let secret = ClientCredentials::new_secret().map_err(|_| DirectoryError::Crypto)?;
    let sealed = seal_secret(keys, &client_id, &secret).await?;
    let now = now_secs();
    let row = ClientRow {
        id: client_id.id,
        name: name.to_owned(),
        scopes: scopes.to_oauth(),
        secret: sealed,
        created_at: now,
        secret_rotated_at: now,
        revoked_at: None,
    };
    hub.store().insert_client(ws, &row).await?;
    Ok((row, ClientCredentials { client_id, secret }))
}

/// Replaces a client's secret; the new one is returned once. Tokens already issued stay
/// valid until they expire or are revoked.
pub async fn rotate_client_secret(
    hub: &Hub,
    keys: &WorkspaceKeys,
    client_id: &ClientId,
) -> Result<SecretString, DirectoryError> {
    let secret = ClientCredentials::new_secret().map_err(|_| DirectoryError::Crypto)?;
    let sealed = seal_secret(keys, client_id, &secret).await?;
    if !hub
        .store()
        .set_client_secret(client_id.workspace, &client_id.id, sealed, now_secs())
        .await?
    {
        return Err(DirectoryError::NotFound("client"));
    }
    Ok(secret)
}

async fn seal_secret(
    keys: &WorkspaceKeys,
    client_id: &ClientId,
    secret: &SecretString,
) -> Result<Vec<u8>, DirectoryError> {
    let s = secret.clone();
    let hash = blocking(move || hash_password(&s))
        .await?
        .map_err(|_| DirectoryError::Crypto)?;
    keys.seal(
        &secret_ref(client_id.workspace, &client_id.id),
        hash.as_bytes(),
    )
    .map_err(|_| DirectoryError::Crypto)
}

/// Checks a client's credentials. Unknown, revoked and wrong-secret clients all cost one
/// argon2id verification and give the same error.
pub async fn authenticate_client(
    hub: &Hub,
    keys: Option<&WorkspaceKeys>,
    client_id: &ClientId,
    secret: &SecretString,
) -> Result<ClientRow, DirectoryError> {
    let row = match keys {
        Some(_) => {
            hub.store()
                .client(client_id.workspace, &client_id.id)
                .await?
        }
        None => None,
    };
    let hash = match (&row, keys) {
        (Some(r), Some(k)) if r.revoked_at.is_none() => k
            .open(&secret_ref(client_id.workspace, &client_id.id), &r.secret)
            .ok()
            .and_then(|h| String::from_utf8(h).ok()),
        _ => None,
    };
    let well_formed = ClientCredentials::secret_well_formed(secret);
    let s = secret.clone();
    let ok = blocking(move || verify_password(hash.as_deref(), &s)).await?;
    match row {
        Some(r) if ok && well_formed => Ok(r),
        _ => Err(DirectoryError::BadClient),
    }
}

/// Issues an access token for an authenticated client: the requested scopes (all of the
/// client's when none are asked for), which must be a subset of the client's.
pub async fn issue_token(
    hub: &Hub,
    tokens: &TokenKeys,
    client_id: &ClientId,
    client: &ClientRow,
    requested: Option<&str>,
) -> Result<(String, AccessClaims), DirectoryError> {
    let allowed = ScopeSet::parse(&client.scopes).map_err(DirectoryError::BadScopes)?;
    let scopes = match requested.filter(|r| !r.trim().is_empty()) {
        None => allowed,
        Some(r) => {
            let asked = ScopeSet::parse(r).map_err(DirectoryError::ScopeNotAllowed)?;
            if let Some(s) = asked.iter().find(|s| !allowed.contains(*s)) {
                return Err(DirectoryError::ScopeNotAllowed(s.to_string()));
            }
            asked
        }
    };
    let mut jti = [0u8; 16];
    sealsync_crypto::random_bytes(&mut jti).map_err(|_| DirectoryError::Crypto)?;
    let jti = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, jti);
    let now = now_secs();
    let claims = AccessClaims {
        iss: tokens.issuer().to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: client_id.to_string(),
        ws: client_id.workspace.to_string(),
        scope: scopes.to_oauth(),
        iat: now,
        exp: now + TOKEN_LIFETIME_SECS,
        jti,
    };
    let token = tokens.sign(&claims).map_err(|_| DirectoryError::Crypto)?;
    hub.store()
        .insert_token(
            client_id.workspace,
            &TokenRow {
                jti_hash: sha256(claims.jti.as_bytes()),
                client_id: client_id.id,
                issued_at: now,
                expires_at: claims.exp,
                revoked_at: None,
            },
        )
        .await?;
    Ok((token, claims))
}

/// Whether a scope list is acceptable for an API key of a user with `role`: every scope must
/// be within the role.
pub fn check_key_scopes(scopes: &ScopeSet, role: Role) -> Result<(), DirectoryError> {
    if let Some(s) = scopes.iter().find(|s| !role.at_least(s.min_role())) {
        return Err(DirectoryError::BadScopes(format!(
            "scope {s} needs the {} role",
            s.min_role().as_str()
        )));
    }
    Ok(())
}

/// Every scope a role may hold.
pub fn scopes_of_role(role: Role) -> ScopeSet {
    Scope::ALL
        .into_iter()
        .filter(|s| role.at_least(s.min_role()))
        .collect()
}

/// Failed logins in a row that lock a user out.
pub const MAX_FAILED_LOGINS: i64 = 5;
/// How long a lockout lasts.
pub const LOCKOUT_SECS: i64 = 15 * 60;
/// How long a web-console session lives.
pub const SESSION_SECS: i64 = 12 * 3600;

/// Why a login was refused. The caller answers all of them the same way.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    #[error("wrong email or password")]
    Invalid { user: Option<UserId> },
    #[error("too many failed logins: locked")]
    Locked { user: UserId, just_now: bool },
    /// The password was right; the account wants its second factor.
    #[error("a TOTP code or recovery code is required")]
    SecondFactorRequired { user: UserId },
    /// The password was right; the TOTP or recovery code was not (or was used before).
    #[error("wrong second factor")]
    SecondFactorWrong { user: UserId },
}

/// Checks a password login. Every path costs one argon2id verification, whether or not the
/// user exists, is disabled or is locked, so timing tells nothing.
pub async fn login(
    hub: &Hub,
    email: &str,
    password: &SecretString,
    second_factor: Option<&str>,
) -> Result<Result<UserRow, LoginError>, DirectoryError> {
    let user = match normalize_login(email) {
        Ok(e) => hub.store().user_by_email(&e).await?,
        Err(_) => None,
    };
    let now = now_secs();
    let usable = user
        .as_ref()
        .filter(|u| u.disabled_at.is_none())
        .and_then(|u| u.password_hash.clone());
    let pw = password.clone();
    let ok = blocking(move || verify_password(usable.as_deref(), &pw)).await?;
    let Some(user) = user else {
        return Ok(Err(LoginError::Invalid { user: None }));
    };
    if user.locked_until.is_some_and(|t| t > now) {
        return Ok(Err(LoginError::Locked {
            user: user.id,
            just_now: false,
        }));
    }
    if !ok {
        let wrong = LoginError::Invalid {
            user: Some(user.id),
        };
        return Ok(Err(failed(hub, user.id, now, wrong).await?));
    }
    if user.totp_enabled_at.is_some() {
        let Some(code) = second_factor.map(str::trim).filter(|c| !c.is_empty()) else {
            return Ok(Err(LoginError::SecondFactorRequired { user: user.id }));
        };
        if !second_factor_ok(hub, &user, code, now).await? {
            let wrong = LoginError::SecondFactorWrong { user: user.id };
            return Ok(Err(failed(hub, user.id, now, wrong).await?));
        }
    }
    hub.store().login_succeeded(user.id).await?;
    Ok(Ok(user))
}

/// Counts a failed login: `wrong`, or `Locked` once the failures reach the limit.
async fn failed(
    hub: &Hub,
    user: UserId,
    now: i64,
    wrong: LoginError,
) -> Result<LoginError, DirectoryError> {
    let failures = hub
        .store()
        .login_failed(user, MAX_FAILED_LOGINS, now + LOCKOUT_SECS)
        .await?;
    if failures >= MAX_FAILED_LOGINS {
        return Ok(LoginError::Locked {
            user,
            just_now: failures == MAX_FAILED_LOGINS,
        });
    }
    Ok(wrong)
}

/// A TOTP code (accepted once per time step) or an unused recovery code (then spent).
async fn second_factor_ok(
    hub: &Hub,
    user: &UserRow,
    code: &str,
    now: i64,
) -> Result<bool, DirectoryError> {
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        let Some(secret) = open_totp_secret(hub, user).await? else {
            return Ok(false);
        };
        let Some(step) = crate::totp::check(&secret, code, now.max(0) as u64) else {
            return Ok(false);
        };
        return Ok(hub
            .store()
            .use_totp_step(user.id, i64::try_from(step).unwrap_or(i64::MAX))
            .await?);
    }
    let Some(stored) = &user.recovery_codes else {
        return Ok(false);
    };
    match crate::totp::use_recovery_code(stored, code) {
        Some(rest) => Ok(hub
            .store()
            .replace_recovery_codes(user.id, stored, &rest)
            .await?),
        None => Ok(false),
    }
}

fn totp_ref(user: &UserId) -> RecordRef<'_> {
    RecordRef {
        table: "users",
        workspace: WorkspaceId::NIL,
        record: user.as_bytes(),
        field: "totp_secret",
    }
}

/// Keys that seal installation-level secrets, made on first use.
async fn installation_sealer(hub: &Hub) -> Result<WorkspaceKeys, DirectoryError> {
    use sealsync_store::KeyPurpose;
    hub.ensure_installation_key(KeyPurpose::Secrets).await?;
    let keys = hub.installation_keys(KeyPurpose::Secrets).await?;
    let index = keys
        .first()
        .and_then(|(_, k, _)| sealsync_crypto::KeyBytes::from_slice(k.expose()).ok())
        .ok_or(DirectoryError::Crypto)?;
    WorkspaceKeys::new(
        WorkspaceId::NIL,
        keys.into_iter().map(|(v, k, _)| (v, k)).collect(),
        &index,
    )
    .map_err(|_| DirectoryError::Crypto)
}

async fn open_totp_secret(
    hub: &Hub,
    user: &UserRow,
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, DirectoryError> {
    let Some(sealed) = &user.totp_secret else {
        return Ok(None);
    };
    let keys = installation_sealer(hub).await?;
    Ok(keys
        .open(&totp_ref(&user.id), sealed)
        .ok()
        .map(zeroize::Zeroizing::new))
}

/// Starts TOTP enrolment: a new secret (pending until [`confirm_totp`]) and its otpauth URI,
/// shown once. Refused while TOTP is on.
pub async fn begin_totp(hub: &Hub, user: &UserRow) -> Result<SecretString, DirectoryError> {
    if user.totp_enabled_at.is_some() {
        return Err(DirectoryError::BadName("TOTP is already on".into()));
    }
    let secret = crate::totp::new_secret().map_err(|_| DirectoryError::Crypto)?;
    let keys = installation_sealer(hub).await?;
    let sealed = keys
        .seal(&totp_ref(&user.id), &secret)
        .map_err(|_| DirectoryError::Crypto)?;
    if !hub.store().set_totp_pending(user.id, sealed).await? {
        return Err(DirectoryError::BadName("TOTP is already on".into()));
    }
    let uri = crate::totp::otpauth_uri(&secret, &user.email).map_err(|_| DirectoryError::Crypto)?;
    Ok(SecretString::from(uri))
}

/// Finishes enrolment with a code from the app; gives the recovery codes, shown once.
pub async fn confirm_totp(
    hub: &Hub,
    user_id: UserId,
    code: &str,
) -> Result<Option<Vec<String>>, DirectoryError> {
    let Some(user) = hub.store().user_by_id(user_id).await? else {
        return Err(DirectoryError::NotFound("user"));
    };
    if user.totp_enabled_at.is_some() {
        return Ok(None);
    }
    let Some(secret) = open_totp_secret(hub, &user).await? else {
        return Ok(None);
    };
    let now = now_secs();
    let Some(step) = crate::totp::check(&secret, code.trim(), now.max(0) as u64) else {
        return Ok(None);
    };
    let (shown, stored) = crate::totp::recovery_codes().map_err(|_| DirectoryError::Crypto)?;
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    if !hub.store().enable_totp(user.id, &stored, step, now).await? {
        return Ok(None);
    }
    Ok(Some(shown))
}

/// Starts a session for `user`: the cookie value (shown to the browser only) and its row.
pub async fn create_session(
    hub: &Hub,
    user: UserId,
) -> Result<(SecretString, sealsync_store::SessionRow), DirectoryError> {
    let mut raw = [0u8; 32];
    sealsync_crypto::random_bytes(&mut raw).map_err(|_| DirectoryError::Crypto)?;
    let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
    let now = now_secs();
    let row = sealsync_store::SessionRow {
        id_hash: sha256(token.as_bytes()),
        user_id: user,
        created_at: now,
        expires_at: now + SESSION_SECS,
        revoked_at: None,
    };
    hub.store().insert_session(&row).await?;
    Ok((SecretString::from(token), row))
}

/// How long an invitation stays valid.
pub const INVITE_SECS: i64 = 7 * 86_400;

/// Invites `email` into `ws` as `role`; the invitation (`ssi_…`) is returned once.
pub async fn create_invite(
    hub: &Hub,
    ws: WorkspaceId,
    email: &str,
    role: Role,
) -> Result<(SecretString, i64), DirectoryError> {
    let email = normalize_login(email)?;
    let mut raw = [0u8; 32];
    sealsync_crypto::random_bytes(&mut raw).map_err(|_| DirectoryError::Crypto)?;
    let secret = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
    let token = format!(
        "ssi_{}_{secret}",
        uuid::Uuid::from_bytes(*ws.as_bytes()).simple()
    );
    let now = now_secs();
    let expires = now + INVITE_SECS;
    hub.store()
        .insert_invite(ws, &sha256(token.as_bytes()), &email, role, now, expires)
        .await?;
    Ok((SecretString::from(token), expires))
}

/// Accepts an invitation: the invited user joins (made first, with `password`, if new).
/// `None` when the invitation is unknown, used or expired.
pub async fn accept_invite(
    hub: &Hub,
    token: &str,
    password: Option<SecretString>,
) -> Result<Option<(UserRow, WorkspaceId, Role)>, DirectoryError> {
    let Some(rest) = token.strip_prefix("ssi_") else {
        return Ok(None);
    };
    let Some(ws) = rest
        .get(..32)
        .and_then(|h| uuid::Uuid::try_parse(h).ok())
        .map(|u| WorkspaceId::from_bytes(*u.as_bytes()))
    else {
        return Ok(None);
    };
    let now = now_secs();
    let Some((email, role)) = hub
        .store()
        .take_invite(ws, &sha256(token.as_bytes()), now)
        .await?
    else {
        return Ok(None);
    };
    let user = match hub.store().user_by_email(&email).await? {
        Some(u) => {
            hub.store().put_member(ws, u.id, role, now).await?;
            u
        }
        None => create_user(hub, &email, password, Some((ws, role))).await?,
    };
    Ok(Some((user, ws, role)))
}
