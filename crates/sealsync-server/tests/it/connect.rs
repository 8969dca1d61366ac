//! Connect over real HTTPS: tokens made by the customer's backend, used by an end user through
//! the hosted page or from an allowed origin; expired, withdrawn, misused tokens fail; removing
//! the user removes their accounts and what came through them.

use std::time::Duration;

use reqwest::StatusCode;
use sealsync_engine::inbox::webhook::SigningSecret;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error, spawn_app};
use crate::sync_ops::all_bytes;

const ORIGIN: &str = "https://app.customer.example";
const CRM_KEY: &str = "whsec_Y29ubmVjdGVkLWJ5LXRoZS1lbmQtdXNlci0wMDAx";
const DAV_PASSWORD: &str = "end-user-dav-password-9f1c";

async fn make_token(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.http
        .post(app.url("/v1/connect/tokens"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn token_body(user: &str) -> Value {
    json!({
        "external_user_id": user,
        "apps": [
            {"name": "crm", "kind": "api-key", "label": "Acme <CRM>"},
            {"name": "dav", "kind": "basic"}
        ],
        "allowed_origins": [ORIGIN],
    })
}

async fn connect_api(
    app: &TestApp,
    token: &str,
    origin: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url("/v1/connect/accounts"))
        .bearer_auth(token)
        .json(&body);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn end_users_connect_their_own_accounts_and_leave_with_them() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let resp = make_token(&app, &key, token_body("cust-42")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let made: Value = resp.json().await.unwrap();
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sct_"));
    let link = made["connect_link"].as_str().unwrap();
    assert!(link.ends_with(&format!("/connect?token={token}")), "{link}");
    let tag = made["user_tag"].as_str().unwrap().to_owned();
    let crm_account = format!("crm.{tag}");
    assert_eq!(made["accounts"]["crm"], crm_account.as_str());
    assert!(!made.to_string().contains("cust-42"));

    // The token reads nothing.
    for path in ["/contacts", "/accounts", "/endpoints"] {
        let resp = app
            .http
            .get(app.ws_url(app.ws, path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }

    // The hosted page: one form per app, labels escaped, never cached, framed only by the
    // customer's origin.
    let resp = app
        .http
        .get(app.url(&format!("/connect?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains(&format!("frame-ancestors {ORIGIN}")), "{csp}");
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("Acme &lt;CRM&gt;") && !html.contains("<CRM>"),
        "{html}"
    );
    assert_eq!(html.matches("<form").count(), 2);

    // The user connects the CRM key through the page (posted from the page's own origin).
    let own = app.url("").trim_end_matches('/').to_owned();
    let resp = app
        .http
        .post(app.url("/connect"))
        .header("origin", &own)
        .form(&[("token", token.as_str()), ("app", "crm"), ("key", CRM_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("is connected"));
    // A form posted from elsewhere is refused.
    let resp = app
        .http
        .post(app.url("/connect"))
        .header("origin", "https://evil.example")
        .form(&[("token", token.as_str()), ("app", "crm"), ("key", CRM_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // And the CardDAV password from the customer's web app, through the API.
    let dav = json!({"app": "dav", "username": "ann", "password": DAV_PASSWORD});
    let resp = connect_api(&app, &token, Some(ORIGIN), dav.clone()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["account"],
        format!("dav.{tag}")
    );
    // Wrong origin, no origin, wrong user, an app not offered, the wrong kind of secret.
    let resp = connect_api(&app, &token, Some("https://evil.example"), dav.clone()).await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    let resp = connect_api(&app, &token, None, dav.clone()).await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    let mut other = dav.clone();
    other["external_user_id"] = json!("cust-43");
    let resp = connect_api(&app, &token, Some(ORIGIN), other).await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    let resp = connect_api(
        &app,
        &token,
        Some(ORIGIN),
        json!({"app": "mail", "key": "k"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = connect_api(
        &app,
        &token,
        Some(ORIGIN),
        json!({"app": "crm", "username": "u", "password": "p"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // The accounts exist, write-only.
    let resp = app
        .http
        .get(app.ws_url(app.ws, "/accounts"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let listed = resp.text().await.unwrap();
    assert!(
        listed.contains(&crm_account) && listed.contains(&format!("dav.{tag}")),
        "{listed}"
    );
    assert!(!listed.contains(CRM_KEY) && !listed.contains(DAV_PASSWORD));

    // The customer syncs through the connected account: a webhook endpoint whose signing
    // secret is the CRM key the user gave.
    let put = |path: &str, body: Value| {
        app.http
            .put(app.ws_url(app.ws, path))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let resp = put(
        "/endpoints/crm-42",
        json!({"kind": "webhook", "account": crm_account}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let endpoint = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = put(
        "/links/crm-42",
        json!({"endpoint": "crm-42", "direction": "pull"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body =
        json!([{"id": "c-1", "name": "Synced Through", "email": "st@example.org"}]).to_string();
    let at = sealsync_store::now_ms() / 1000;
    let resp = app
        .http
        .post(app.url(&format!("/v1/hooks/{endpoint}")))
        .header("content-type", "application/json")
        .header("webhook-id", "d-1")
        .header("webhook-timestamp", at.to_string())
        .header(
            "webhook-signature",
            SigningSecret::parse(CRM_KEY)
                .unwrap()
                .sign("d-1", at, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let contacts = |app: &TestApp| {
        let req = app
            .http
            .get(app.ws_url(app.ws, "/contacts"))
            .bearer_auth(&key)
            .send();
        async move {
            req.await.unwrap().json::<Value>().await.unwrap()["contacts"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    for _ in 0..200 {
        if contacts(&app).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(contacts(&app).await, 1);

    // Secrets are nowhere but sealed.
    let raw = all_bytes(app.dir.path());
    for secret in [CRM_KEY, DAV_PASSWORD, token.as_str()] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} on disk"
        );
    }
    let audit = serde_json::to_string(&app.audit_entries(app.ws).await).unwrap();
    assert!(
        !audit.contains(CRM_KEY) && !audit.contains(DAV_PASSWORD) && !audit.contains("cust-42")
    );
    assert!(audit.contains("connect.token_created"));

    // The user leaves: accounts, endpoint, link and what came through them go; the token too.
    let resp = app
        .http
        .delete(app.url("/v1/connect/users/cust-42"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let removed: Value = resp.json().await.unwrap();
    assert_eq!(
        removed,
        json!({"accounts": 2, "endpoints": 1, "links": 1, "contacts": 1, "tokens": 1})
    );
    assert_eq!(contacts(&app).await, 0);
    let resp = connect_api(&app, &token, Some(ORIGIN), dav).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let resp = app
        .http
        .get(app.url(&format!("/connect?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn connect_tokens_expire_and_are_checked_when_made() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let mut body = token_body("cust-7");
    body["expires_in"] = json!(1);
    let resp = make_token(&app, &key, body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let token = resp.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = connect_api(
        &app,
        &token,
        Some(ORIGIN),
        json!({"app": "crm", "key": "k-0123456789"}),
    )
    .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // A forged token of the right shape.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let resp = connect_api(
        &app,
        &forged,
        Some(ORIGIN),
        json!({"app": "crm", "key": "k"}),
    )
    .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;

    for bad in [
        json!({"external_user_id": "", "apps": [{"name": "crm", "kind": "api-key"}]}),
        json!({"external_user_id": "u", "apps": []}),
        json!({"external_user_id": "u", "apps": [{"name": "crm", "kind": "oauth"}]}),
        json!({"external_user_id": "u", "apps": [{"name": "a.b", "kind": "basic"}]}),
        json!({"external_user_id": "u", "apps": [{"name": "crm", "kind": "basic"}], "allowed_origins": ["https://x.example/path"]}),
        json!({"external_user_id": "u", "apps": [{"name": "crm", "kind": "basic"}], "expires_in": 14401}),
    ] {
        let resp = make_token(&app, &key, bad.clone()).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // Made only by a credential with the right to change endpoints.
    let (_, viewer) = app
        .user_key(
            app.ws,
            sealsync_types::Role::Viewer,
            sealsync_auth::ScopeSet::all(),
        )
        .await;
    let resp = make_token(&app, &viewer, token_body("cust-8")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}
