//! Single sign-on against a real OpenID provider (panva's oidc-provider, run by Node on
//! loopback): `SEALSYNC_TEST_OIDC_PROVIDER` names `scripts/oidc/provider.mjs` with its
//! packages installed (`scripts/test` does that).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};

use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use sealsync_auth::directory;
use sealsync_server::ServerOptions;
use sealsync_server::sso::OidcOptions;
use sealsync_types::{Role, WorkspaceId};
use serde_json::{Value, json};

use crate::harness::{ISSUER, TestApp, assert_error, spawn_app_with};

const CLIENT_ID: &str = "sealsync";
const CLIENT_SECRET: &str = "sso0test0secret0with0enough0length0to0matter";

/// The provider, stopped (stdin closed, then killed) when dropped.
pub(crate) struct Provider {
    child: Child,
    _stdin: ChildStdin,
    pub(crate) issuer: String,
    _dir: tempfile::TempDir,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider() -> Provider {
    start_provider_with(json!({
        "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [format!("{ISSUER}/v1/sso/callback")],
            "grant_types": ["authorization_code"],
        }],
        "accounts": [
            {"login": "alice", "sub": "sub-alice", "email": "Alice@Example.com", "email_verified": true, "name": "Alice"},
            {"login": "bob", "sub": "sub-bob", "email": "bob@example.com", "email_verified": false, "name": "Bob"},
            {"login": "carol", "sub": "sub-carol", "email": "carol@example.com", "email_verified": true, "name": "Carol"},
        ],
    }))
}

/// The provider with `config` (see scripts/oidc/provider.mjs).
pub(crate) fn start_provider_with(config: Value) -> Provider {
    let script = std::env::var("SEALSYNC_TEST_OIDC_PROVIDER").expect(
        "SEALSYNC_TEST_OIDC_PROVIDER names scripts/oidc/provider.mjs (scripts/test sets it)",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provider.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = Command::new("node")
        .arg(&script)
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs");
    let stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value = serde_json::from_str(&line).expect("the provider's ready line");
    let issuer = ready["issuer"].as_str().unwrap().to_owned();
    assert!(issuer.starts_with("http://127.0.0.1:"));
    Provider {
        child,
        _stdin: stdin,
        issuer,
        _dir: dir,
    }
}

async fn app_with_sso(provider: &Provider) -> TestApp {
    spawn_app_with(ServerOptions {
        oidc: Some(OidcOptions {
            issuer: provider.issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.to_owned().into(),
            redirect_url: format!("{ISSUER}/v1/sso/callback"),
        }),
        ..ServerOptions::default()
    })
    .await
}

fn cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (n, value) = pair.split_once('=')?;
            (n == name && !value.is_empty()).then(|| value.to_owned())
        })
}

pub(crate) fn location(resp: &reqwest::Response) -> String {
    resp.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// A browser at the provider: signs in as `login` (or cancels when `None`) and returns the
/// URL the provider sends it back to.
pub(crate) async fn at_provider(
    provider: &Provider,
    authorize: &str,
    login: Option<&str>,
) -> String {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let abs = |l: String| {
        if l.starts_with('/') {
            format!("{}{l}", provider.issuer)
        } else {
            l
        }
    };
    let resp = browser.get(authorize).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let interaction = abs(location(&resp));
    assert!(interaction.contains("/interaction/"), "{interaction}");
    let page = browser.get(&interaction).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let resp = match login {
        Some(login) => browser
            .post(format!("{interaction}/login"))
            .form(&[("login", login)])
            .send()
            .await
            .unwrap(),
        None => browser
            .post(format!("{interaction}/abort"))
            .send()
            .await
            .unwrap(),
    };
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let mut next = abs(location(&resp));
    while next.starts_with(&provider.issuer) {
        let resp = browser.get(&next).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{next}");
        next = abs(location(&resp));
    }
    next
}

/// Starts a login at sealsync: (the provider URL, the state cookie).
async fn start(app: &TestApp) -> (String, String) {
    let resp = app.http.get(app.url("/v1/sso/login")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/v1/sso"] {
        assert!(set.contains(attr), "{set}");
    }
    (location(&resp), cookie(&resp, "ss_sso").unwrap())
}

/// The provider's redirect, delivered to the test server (the registered redirect URL is
/// the issuer's public address).
async fn callback(app: &TestApp, back: &str, state_cookie: &str) -> reqwest::Response {
    let query = back
        .strip_prefix(&format!("{ISSUER}/v1/sso/callback"))
        .unwrap_or_else(|| panic!("sent back to {back}"));
    app.http
        .get(app.url(&format!("/v1/sso/callback{query}")))
        .header("cookie", format!("ss_sso={state_cookie}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn oidc_sign_in_binds_the_account_and_opens_a_session() {
    let provider = start_provider();
    let app = app_with_sso(&provider).await;
    let alice = directory::create_user(
        &app.hub,
        "alice@example.com",
        None,
        Some((app.ws, Role::Member)),
    )
    .await
    .unwrap();

    let (authorize, state) = start(&app).await;
    assert!(authorize.starts_with(&provider.issuer), "{authorize}");
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "nonce=",
        "state=",
    ] {
        assert!(authorize.contains(part), "{part} in {authorize}");
    }
    let back = at_provider(&provider, &authorize, Some("alice")).await;
    let resp = callback(&app, &back, &state).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let session = cookie(&resp, "ss_session").expect("a session cookie");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["user_id"], alice.id.to_string());
    let me = app
        .http
        .get(app.url("/v1/workspaces"))
        .header("cookie", format!("ss_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert!(me.text().await.unwrap().contains(&app.ws.to_string()));

    // The same answer again: the login it belonged to is over.
    assert_error(
        callback(&app, &back, &state).await,
        StatusCode::UNAUTHORIZED,
        "sso_failed",
    )
    .await;

    // A second login finds the bound account.
    let (authorize, state) = start(&app).await;
    let back = at_provider(&provider, &authorize, Some("alice")).await;
    let resp = callback(&app, &back, &state).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let entries = app.audit_entries(WorkspaceId::NIL).await;
    let text = serde_json::to_string(&entries).unwrap();
    assert_eq!(text.matches("login.succeeded").count(), 2, "{text}");
    assert!(
        !text.contains("alice@") && !text.contains("sub-alice"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn oidc_sign_in_refuses_strangers_unverified_emails_and_foreign_state() {
    let provider = start_provider();
    let app = app_with_sso(&provider).await;
    directory::create_user(
        &app.hub,
        "bob@example.com",
        None,
        Some((app.ws, Role::Member)),
    )
    .await
    .unwrap();

    // bob exists, but the provider does not vouch for his email.
    let (authorize, state) = start(&app).await;
    let back = at_provider(&provider, &authorize, Some("bob")).await;
    assert_error(
        callback(&app, &back, &state).await,
        StatusCode::UNAUTHORIZED,
        "sso_failed",
    )
    .await;

    // carol is verified, but there is no such user: single sign-on creates none.
    let (authorize, state) = start(&app).await;
    let back = at_provider(&provider, &authorize, Some("carol")).await;
    assert_error(
        callback(&app, &back, &state).await,
        StatusCode::UNAUTHORIZED,
        "sso_failed",
    )
    .await;

    // A code delivered to another browser (its own state cookie) is refused.
    let (_, theirs) = start(&app).await;
    let (authorize, _mine) = start(&app).await;
    let back = at_provider(&provider, &authorize, Some("carol")).await;
    assert_error(
        callback(&app, &back, &theirs).await,
        StatusCode::UNAUTHORIZED,
        "sso_failed",
    )
    .await;
    let query = back.split_once('?').unwrap().1;
    let resp = app
        .http
        .get(app.url(&format!("/v1/sso/callback?{query}")))
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::UNAUTHORIZED, "sso_failed").await;

    // Cancelled at the provider.
    let (authorize, state) = start(&app).await;
    let back = at_provider(&provider, &authorize, None).await;
    assert!(back.contains("error=access_denied"), "{back}");
    assert_error(
        callback(&app, &back, &state).await,
        StatusCode::UNAUTHORIZED,
        "sso_failed",
    )
    .await;

    // No session came out of any of it; every refusal is in the audit log.
    let entries: Vec<String> = app
        .audit_entries(WorkspaceId::NIL)
        .await
        .iter()
        .map(Value::to_string)
        .collect();
    let failed = entries
        .iter()
        .filter(|e| e.contains("login.failed"))
        .count();
    assert_eq!(failed, 5, "{entries:?}");
    assert!(!entries.iter().any(|e| e.contains("login.succeeded")));
    app.stop().await;
}

#[tokio::test]
async fn sso_is_not_there_unless_configured() {
    let app = crate::harness::spawn_app().await;
    let resp = app.http.get(app.url("/v1/sso/login")).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    app.stop().await;
}
