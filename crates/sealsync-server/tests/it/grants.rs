//! OAuth connect against a real OAuth server on loopback (the OpenID provider of the SSO
//! tests, rotating its refresh tokens): the authorization-code flow with PKCE and `state`, from
//! the API and from a Connect link; one refresh at a time; a revoked grant stops its links.

use std::sync::Arc;

use reqwest::StatusCode;
use sealsync_connector::credential::{Credential, OAuthApp};
use sealsync_engine::{Direction, EndpointSpec, Engine, LinkSpec};
use serde_json::{Value, json};

use crate::harness::{ISSUER, TestApp, spawn_app};
use crate::sso::{Provider, at_provider, location, start_provider_with};

const CLIENT_ID: &str = "crm-app";
const CLIENT_SECRET: &str = "crm0app0secret0with0enough0length0to0matter";

fn provider() -> Provider {
    start_provider_with(json!({
        "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [format!("{ISSUER}/v1/oauth/callback")],
            "grant_types": ["authorization_code", "refresh_token"],
        }],
        "accounts": [
            {"login": "alice", "sub": "sub-alice", "email": "alice@example.com", "email_verified": true, "name": "Alice"},
        ],
        "rotate_refresh_tokens": true,
    }))
}

/// The workspace's engine, as the operator's CLI has it.
async fn engine(app: &TestApp) -> Engine {
    let (_, keys) = app
        .hub
        .open_workspace(&sealsync_types::WorkspaceName::default_workspace())
        .await
        .unwrap();
    Engine::new(app.hub.clone(), Arc::new(keys), None)
}

/// Declares the app's client (an `oauth-app` account), reaching the provider on loopback.
async fn declare_app(app: &TestApp, p: &Provider) -> Engine {
    let engine = engine(app).await;
    let port = p.issuer.rsplit(':').next().unwrap();
    let app_config = OAuthApp {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.to_owned().into(),
        authorize_url: format!("{}/auth", p.issuer),
        token_url: format!("{}/token", p.issuer),
        scopes: vec!["openid".into(), "offline_access".into()],
        allow: vec![format!("127.0.0.1:{port}")],
    };
    engine
        .put_account("crm-app", &Credential::OAuthApp(app_config))
        .await
        .unwrap();
    engine
}

/// The provider's answer, delivered to the test server (the registered redirect URL is the
/// issuer's public address).
async fn back_at_sealsync(app: &TestApp, back: &str) -> reqwest::Response {
    let query = back
        .strip_prefix(&format!("{ISSUER}/v1/oauth/callback"))
        .unwrap_or_else(|| panic!("sent back to {back}"));
    app.http
        .get(app.url(&format!("/v1/oauth/callback{query}")))
        .send()
        .await
        .unwrap()
}

/// Starts connecting the account `crm` through `crm-app`: where to send the person.
async fn authorize_crm(app: &TestApp, key: &str) -> String {
    let resp = app
        .http
        .post(app.ws_url(app.ws, "/accounts/crm/authorize"))
        .bearer_auth(key)
        .json(&json!({"app": "crm-app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json::<Value>().await.unwrap()["authorize_url"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn accounts(app: &TestApp, key: &str) -> Vec<Value> {
    app.http
        .get(app.ws_url(app.ws, "/accounts"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The grant as stored now.
async fn grant(engine: &Engine, name: &str) -> sealsync_connector::credential::OAuthGrant {
    match engine.open_account(name).await.unwrap().1 {
        Credential::OAuth(g) => g,
        other => panic!("not a grant: {other:?}"),
    }
}

/// Makes the stored access token look expired, so the next use refreshes it.
async fn expire(engine: &Engine, name: &str) {
    let mut g = grant(engine, name).await;
    g.expires_at = Some(0);
    engine
        .put_account(name, &Credential::OAuth(g))
        .await
        .unwrap();
}

#[tokio::test]
async fn oidc_oauth_connect_refreshes_once_and_stops_on_revocation() {
    let p = provider();
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let engine = declare_app(&app, &p).await;

    // Started over the API: the URL carries state and a PKCE challenge.
    let authorize = authorize_crm(&app, &key).await;
    let url = reqwest::Url::parse(&authorize).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["state"].len() >= 43);
    let back = at_provider(&p, &authorize, Some("alice")).await;

    // A state that is not one, then the real answer, then the same answer again.
    let forged = back.replace(&q["state"].to_string(), "not-a-state");
    assert_eq!(
        back_at_sealsync(&app, &forged).await.status(),
        StatusCode::BAD_REQUEST
    );
    let resp = back_at_sealsync(&app, &back).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("Connected"));
    assert_eq!(
        back_at_sealsync(&app, &back).await.status(),
        StatusCode::BAD_REQUEST,
        "a state is used once"
    );
    let listed = accounts(&app, &key).await;
    let crm = listed.iter().find(|a| a["name"] == "crm").unwrap();
    assert_eq!(crm["kind"], "oauth");
    assert_eq!(crm["hint"], "grant from crm-app, refreshable");
    assert!(crm["status"].is_null());
    let first = grant(&engine, "crm").await;
    assert!(first.refresh.is_some());

    // Ten uses at once of an expired grant: one refresh (with rotation, a second one would
    // spend a spent refresh token and the provider would revoke the grant).
    expire(&engine, "crm").await;
    let uses = (0..10).map(|_| {
        let engine = engine.clone();
        async move { engine.oauth_access("crm").await }
    });
    let got = spawned_together(uses).await;
    let tokens: std::collections::HashSet<String> = got
        .into_iter()
        .map(|g| secrecy::ExposeSecret::expose_secret(&g.unwrap().0.access).to_owned())
        .collect();
    assert_eq!(tokens.len(), 1, "every use got the one refreshed token");
    let refreshed = grant(&engine, "crm").await;
    assert!(refreshed.expires_at.unwrap() > sealsync_store::now_ms() / 1000 + 600);
    // And the rotated refresh token works: the grant is still alive at the provider.
    expire(&engine, "crm").await;
    engine.oauth_access("crm").await.unwrap();

    // The grant revoked at the app: the next refresh is refused, the account is marked, and
    // runs using it stop with that status without asking the app again.
    let resp = reqwest::Client::new()
        .post(format!("{}/token/revocation", p.issuer))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[(
            "token",
            secrecy::ExposeSecret::expose_secret(
                grant(&engine, "crm").await.refresh.as_ref().unwrap(),
            ),
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    expire(&engine, "crm").await;
    let err = engine.oauth_access("crm").await.unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let listed = accounts(&app, &key).await;
    let crm = listed.iter().find(|a| a["name"] == "crm").unwrap();
    assert_eq!(crm["status"], "revoked");
    engine
        .put_endpoint(
            "book",
            &EndpointSpec::Carddav {
                url: "http://127.0.0.1:9/dav/".into(),
                account: Some("crm".into()),
                version: None,
                allow: vec!["127.0.0.1:9".into()],
            },
            false,
        )
        .await
        .unwrap();
    let spec = LinkSpec {
        direction: Direction::Pull,
        ..LinkSpec::default()
    };
    engine.put_link("book", "book", &spec, false).await.unwrap();
    let def = engine
        .link_defs()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == "book")
        .unwrap();
    let err = engine
        .run(&def, &sealsync_engine::RunOptions::default(), &|_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    assert!(!err.to_string().contains(CLIENT_SECRET));

    // Connected again, it works again.
    let authorize = authorize_crm(&app, &key).await;
    let back = at_provider(&p, &authorize, Some("alice")).await;
    assert_eq!(back_at_sealsync(&app, &back).await.status(), StatusCode::OK);
    engine.oauth_access("crm").await.unwrap();
    assert!(
        accounts(&app, &key)
            .await
            .iter()
            .find(|a| a["name"] == "crm")
            .unwrap()["status"]
            .is_null()
    );
}

#[tokio::test]
async fn oidc_connect_links_send_end_users_through_the_app() {
    let p = provider();
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    declare_app(&app, &p).await;

    // An oauth app must name an oauth-app account of the workspace.
    let resp = app
        .http
        .post(app.url("/v1/connect/tokens"))
        .bearer_auth(&key)
        .json(&json!({"external_user_id": "user-42", "apps": [{"name": "crm", "kind": "oauth", "oauth_app": "nope"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = app
        .http
        .post(app.url("/v1/connect/tokens"))
        .bearer_auth(&key)
        .json(&json!({"external_user_id": "user-42", "apps": [{"name": "crm", "kind": "oauth", "oauth_app": "crm-app", "label": "Our CRM"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let account = v["accounts"]["crm"].as_str().unwrap().to_owned();

    // No secret can be posted for it: it connects through the app.
    let resp = app
        .http
        .post(app.url("/v1/connect/accounts"))
        .bearer_auth(&token)
        .json(&json!({"app": "crm", "key": "some-key-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let page = app
        .http
        .get(app.url(&format!("/connect?token={token}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/connect/oauth?token="), "{page}");
    assert!(page.contains("Connect Our CRM"));
    let resp = app
        .http
        .get(app.url(&format!("/connect/oauth?token={token}&app=crm")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let authorize = location(&resp);
    assert!(authorize.starts_with(&p.issuer), "{authorize}");
    let back = at_provider(&p, &authorize, Some("alice")).await;
    assert_eq!(back_at_sealsync(&app, &back).await.status(), StatusCode::OK);
    let listed = accounts(&app, &key).await;
    let a = listed.iter().find(|a| a["name"] == account).unwrap();
    assert_eq!(a["kind"], "oauth");

    // An expired or unknown token starts nothing.
    let resp = app
        .http
        .get(app.url("/connect/oauth?token=sct_nope&app=crm"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let audit = app.audit_entries(app.ws).await;
    for action in ["account.changed", "account.used"] {
        assert!(
            audit
                .iter()
                .any(|e| e["action"] == action && e["actor"]["kind"] == "connect_token"),
            "{action}: {audit:?}"
        );
    }
}

/// Runs the futures at once, each on its own task, and gives their outputs.
async fn spawned_together<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
