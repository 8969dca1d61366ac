//! Behaviour a caller meets: TLS and headers, OAuth, tokens under attack, contacts, bad input.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use reqwest::StatusCode;
use sealsync_auth::jwt::{AUDIENCE, AccessClaims, now_secs};
use sealsync_server::{ServeError, Transport};
use serde_json::{Value, json};

use crate::harness::{ISSUER, TestApp, assert_error, spawn_app, spawn_app_pg};

#[tokio::test]
async fn tls_with_security_headers_and_health() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert!(
        h["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h.contains_key("content-security-policy"));
    assert!(h.contains_key("x-request-id"));
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("sealsync_http_requests_total")
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(app.base.replace("https://", "http://") + "/healthz")
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != StatusCode::OK);

    // Unknown paths answer in the envelope.
    let resp = app.http.get(app.url("/nope")).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn plain_http_only_on_loopback() {
    let app = axum::Router::new();
    let err = sealsync_server::serve(
        "0.0.0.0:0".parse().unwrap(),
        Transport::InsecureHttpLoopback,
        app.clone(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServeError::NotLoopback(_)));
    let running = sealsync_server::serve(
        "127.0.0.1:0".parse().unwrap(),
        Transport::InsecureHttpLoopback,
        app,
    )
    .await
    .unwrap();
    assert!(running.addr.ip().is_loopback());
    running.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn client_credentials_flow_revocation_and_introspection() {
    let app = spawn_app().await;
    let (id, secret) = app
        .client(app.ws, &["contacts:read", "contacts:write"])
        .await;
    assert!(id.starts_with("ssc_") && secret.starts_with("sss_"));

    // The listing never shows the secret.
    let key = app.owner_key(app.ws).await;
    let list: Value = app
        .http
        .get(app.ws_url(app.ws, "/clients"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!list.to_string().contains(&secret));
    assert!(list[0].get("client_secret").is_none());

    // Wrong secret, unknown client, wrong grant.
    let bad = app
        .token(&id, "sss_wrongwrongwrongwrongwrongwrongwrongwrongwro", None)
        .await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let unknown = app.token(&id.replace('a', "b"), &secret, None).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let too_much = app.token(&id, &secret, Some("audit:read")).await;
    assert_eq!(too_much.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        too_much.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );

    // HTTP Basic works too, and the answer is not cached.
    let resp = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "contacts:read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["scope"], "contacts:read");
    let token = v["access_token"].as_str().unwrap().to_owned();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert!(header.kid.is_some());

    let contacts = app.ws_url(app.ws, "/contacts");
    let ok = app
        .http
        .get(&contacts)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // The token carries only contacts:read.
    let denied = app
        .http
        .post(&contacts)
        .bearer_auth(&token)
        .json(&json!({"vcard": "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nEND:VCARD\r\n"}))
        .send()
        .await
        .unwrap();
    assert_error(denied, StatusCode::FORBIDDEN, "insufficient_scope").await;

    // Introspection (by the client itself).
    let intro: Value = app
        .http
        .post(app.url("/oauth/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(intro["active"], true);
    assert_eq!(intro["client_id"], id.as_str());

    // Revocation: 200, then the token is dead everywhere.
    let rev = app
        .http
        .post(app.url("/oauth/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(rev.status(), StatusCode::OK);
    let after = app
        .http
        .get(&contacts)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_error(after, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let intro: Value = app
        .http
        .post(app.url("/oauth/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(intro, json!({"active": false}));
    // Revoking garbage is still 200 (RFC 7009).
    let rev = app
        .http
        .post(app.url("/oauth/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", "garbage")])
        .send()
        .await
        .unwrap();
    assert_eq!(rev.status(), StatusCode::OK);

    // Secret rotation: the old secret stops working, the new one works.
    let rotated: Value = app
        .http
        .post(app.ws_url(app.ws, &format!("/clients/{id}/secret")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = rotated["client_secret"].as_str().unwrap();
    assert_eq!(
        app.token(&id, &secret, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = app.token(&id, new_secret, None).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    let fresh_token = fresh.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Revoking the client kills its tokens and its secret.
    let del = app
        .http
        .delete(app.ws_url(app.ws, &format!("/clients/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let after = app
        .http
        .get(&contacts)
        .bearer_auth(&fresh_token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.token(&id, new_secret, None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Every step is in the workspace's audit chain, which verifies; no secret is in it.
    let entries = app.audit_entries(app.ws).await;
    let installation = app.audit_entries(sealsync_types::WorkspaceId::NIL).await;
    let text = serde_json::to_string(&(entries, installation)).unwrap();
    for action in [
        "client.created",
        "token.issued",
        "token.introspected",
        "token.revoked",
        "client.secret_rotated",
        "client.revoked",
        "token.rejected",
        "access.denied",
        "api_key.used",
    ] {
        assert!(text.contains(action), "{action} missing from the audit log");
    }
    for secret in [secret.as_str(), new_secret, token.as_str()] {
        assert!(!text.contains(secret));
    }
    assert!(text.contains("127.0.0.1"), "source address recorded");
    app.stop().await;
}

fn b64(v: &Value) -> String {
    B64URL.encode(serde_json::to_vec(v).unwrap())
}

/// Every forged or stale token gets the same 401, never a 5xx.
#[tokio::test]
async fn forged_and_stale_tokens_are_refused() {
    let app = spawn_app().await;
    let good = app.access_token(app.ws, &["contacts:read"]).await;
    let url = app.ws_url(app.ws, "/contacts");
    let ok = app.http.get(&url).bearer_auth(&good).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let keys = app.token_keys();
    let kid = keys.current().unwrap().1.to_owned();
    let parts: Vec<&str> = good.split('.').collect();
    let claims: AccessClaims = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
    let now = now_secs();

    let mut forged = Vec::new();
    // Expired (validly signed by the server's own key).
    forged.push(
        keys.sign(&AccessClaims {
            iat: now - 7200,
            exp: now - 3600,
            ..claims.clone()
        })
        .unwrap(),
    );
    // alg: none.
    forged.push(format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    ));
    forged.push(format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": kid})),
        parts[1]
    ));
    // HS256 keyed with the public key from the JWKS.
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.clone());
    for secret in [x.as_bytes().to_vec(), B64URL.decode(x).unwrap()] {
        forged.push(
            jsonwebtoken::encode(
                &h,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(&secret),
            )
            .unwrap(),
        );
    }
    // Unknown kid, and a known kid on another key's signature.
    let stranger = sealsync_auth::TokenKeys::from_seeds(
        ISSUER,
        vec![(1, sealsync_crypto::KeyBytes::generate().unwrap(), now)],
    )
    .unwrap();
    let by_stranger = stranger.sign(&claims).unwrap();
    forged.push(by_stranger.clone());
    let sp: Vec<&str> = by_stranger.split('.').collect();
    forged.push(format!("{}.{}.{}", parts[0], sp[1], sp[2]));
    // Claims edited under the original signature (scope widened).
    let widened = AccessClaims {
        scope: "contacts:read contacts:write".into(),
        ..claims.clone()
    };
    forged.push(format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_value(&widened).unwrap()),
        parts[2]
    ));
    // A valid signature on a token the server never issued (unknown jti).
    forged.push(
        keys.sign(&AccessClaims {
            jti: "never-issued".into(),
            ..claims.clone()
        })
        .unwrap(),
    );
    // Wrong audience.
    forged.push(
        keys.sign(&AccessClaims {
            aud: "someone-else".into(),
            ..claims.clone()
        })
        .unwrap(),
    );
    assert_eq!(claims.aud, AUDIENCE);
    // Garbage.
    forged.push("not.a.jwt".into());
    forged.push(
        "ssk_00000000000000000000000000000000_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
    );

    for (i, t) in forged.iter().enumerate() {
        let resp = app.http.get(&url).bearer_auth(t).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "forgery {i}");
        assert!(resp.headers().contains_key("www-authenticate"));
    }
    let none = app.http.get(&url).send().await.unwrap();
    assert_error(none, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // A good token of another workspace sees nothing here: 404, as for a missing workspace.
    let other = app.access_token(app.other_ws, &["contacts:read"]).await;
    let resp = app.http.get(&url).bearer_auth(&other).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    let missing = app.ws_url(sealsync_types::WorkspaceId::new(), "/contacts");
    let resp = app
        .http
        .get(&missing)
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    app.stop().await;
}

async fn contacts_crud(app: &TestApp) {
    let key = app.owner_key(app.ws).await;
    let url = app.ws_url(app.ws, "/contacts");
    let hostile = "Robert'); DROP TABLE contacts;-- <script>alert(1)</script>";
    let vcard = format!(
        "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1\r\nFN:{hostile}\r\nEMAIL:Ada@Example.COM\r\nEND:VCARD\r\n"
    );
    let created = app
        .http
        .post(&url)
        .bearer_auth(&key)
        .json(&json!({ "vcard": vcard }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let etag = created.headers()["etag"].to_str().unwrap().to_owned();
    let c: Value = created.json().await.unwrap();
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(etag, "\"1\"");

    // Stored and returned as data.
    let got = app
        .http
        .get(format!("{url}/{id}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["etag"], "\"1\"");
    let body: Value = got.json().await.unwrap();
    assert!(body["jcard"].to_string().contains("DROP TABLE contacts"));
    assert!(
        body["jcard"]
            .to_string()
            .contains("<script>alert(1)</script>")
    );

    // Find by email through the blind index (case-folded).
    let found: Value = app
        .http
        .post(format!("{url}/find"))
        .bearer_auth(&key)
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["contacts"][0]["id"], id.as_str());

    // Update: If-Match required and checked.
    let new_card =
        json!({"vcard": "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Ada Lovelace\r\nEND:VCARD\r\n"});
    let no_match = app
        .http
        .put(format!("{url}/{id}"))
        .bearer_auth(&key)
        .json(&new_card)
        .send()
        .await
        .unwrap();
    assert_error(
        no_match,
        StatusCode::PRECONDITION_REQUIRED,
        "precondition_required",
    )
    .await;
    let stale = app
        .http
        .put(format!("{url}/{id}"))
        .bearer_auth(&key)
        .header("if-match", "\"7\"")
        .json(&new_card)
        .send()
        .await
        .unwrap();
    assert_error(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await;
    let updated = app
        .http
        .put(format!("{url}/{id}"))
        .bearer_auth(&key)
        .header("if-match", etag.as_str())
        .json(&new_card)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(updated.headers()["etag"], "\"2\"");

    // Two updates based on the same version: exactly one wins, the other gets 412.
    let race = |name: &'static str| {
        app.http
            .put(format!("{url}/{id}"))
            .bearer_auth(&key)
            .header("if-match", "\"2\"")
            .json(&json!({"vcard": format!("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:{name}\r\nEND:VCARD\r\n")}))
            .send()
    };
    let (a, b) = tokio::join!(race("A"), race("B"));
    let mut statuses = [a.unwrap().status(), b.unwrap().status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);

    // Pagination over more contacts.
    for i in 0..5 {
        let r = app
            .http
            .post(&url)
            .bearer_auth(&key)
            .json(&json!({"jcard": ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", format!("P{i}")]]]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let mut u = format!("{url}?limit=2");
        if let Some(a) = &after {
            u.push_str(&format!("&after={a}"));
        }
        let page: Value = app
            .http
            .get(&u)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen += page["contacts"].as_array().unwrap().len();
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, 6);

    // Delete; then it is gone.
    let del = app
        .http
        .delete(format!("{url}/{id}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let gone = app
        .http
        .get(format!("{url}/{id}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_error(gone, StatusCode::NOT_FOUND, "not_found").await;

    // The contact id of this workspace, asked for through another workspace: 404.
    let other_key = app.owner_key(app.other_ws).await;
    let cross = app
        .http
        .get(app.ws_url(app.other_ws, &format!("/contacts/{id}")))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap();
    assert_error(cross, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn contacts_crud_sqlite() {
    let app = spawn_app().await;
    contacts_crud(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn pg_contacts_crud() {
    let app = spawn_app_pg().await;
    contacts_crud(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_clear_4xx() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    let url = app.ws_url(app.ws, "/contacts");
    let send = |body: Vec<u8>, ct: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&key)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let big = format!("{{\"vcard\": \"{}\"}}", "A".repeat(2 * 1024 * 1024)).into_bytes();
    assert_error(
        send(big, "application/json").await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_error(
        send(b"{\"vcard\": ".to_vec(), "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_error(
        send(b"{\"vcard\": 42}".to_vec(), "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_error(
        send(b"{}".to_vec(), "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        send(b"{\"vcard\": \"not a card\"}".to_vec(), "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_contact",
    )
    .await;
    assert_error(
        send(b"{\"jcard\": [\"vcard\", 5]}".to_vec(), "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_contact",
    )
    .await;
    // The value sent never comes back in an error.
    let resp = send(
        b"{\"vcard\": {\"secret-ish\": \"s3cr3t-value\"}}".to_vec(),
        "application/json",
    )
    .await
    .unwrap();
    assert!(!resp.text().await.unwrap().contains("s3cr3t-value"));
    // Ids that are not ids, and SQL-looking ids.
    for bad in [
        "not-an-id",
        "1%27%20OR%20%271%27%3D%271",
        "..%2F..%2Fetc%2Fpasswd",
    ] {
        let resp = app
            .http
            .get(format!("{url}/{bad}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
        let resp = app
            .http
            .get(app.url(&format!("/v1/workspaces/{bad}/contacts")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn api_keys_shown_once_scoped_and_revocable() {
    let app = spawn_app().await;
    let owner = app.owner_key(app.ws).await;
    let url = app.ws_url(app.ws, "/apikeys");
    let resp = app
        .http
        .post(&url)
        .bearer_auth(&owner)
        .json(&json!({"name": "reporting", "scopes": ["contacts:read"], "expires_in_days": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    let key = v["key"].as_str().unwrap().to_owned();
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ssk_") && key.len() == 80);
    assert!(v["expires_at"].as_i64().unwrap() > now_secs());

    let contacts = app.ws_url(app.ws, "/contacts");
    let ok = app
        .http
        .get(&contacts)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Scoped: no writes.
    let w = app
        .http
        .post(&contacts)
        .bearer_auth(&key)
        .json(&json!({"vcard": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(w, StatusCode::FORBIDDEN, "insufficient_scope").await;
    // A key cannot mint a wider key.
    let wider = app
        .http
        .post(&url)
        .bearer_auth(&key)
        .json(&json!({"name": "x", "scopes": ["contacts:write"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(wider.status(), StatusCode::FORBIDDEN);

    // Listing shows metadata and last use, never the key.
    let list = app
        .http
        .get(&url)
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!list.contains(&key[40..]));
    let list = app.http.get(&url).bearer_auth(&owner).send().await.unwrap();
    let list: Value = list.json().await.unwrap();
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert!(mine["last_used_at"].is_i64());

    // Revoke: dead at once.
    let del = app
        .http
        .delete(format!("{url}/{id}"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let dead = app
        .http
        .get(&contacts)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn viewer_cannot_create_keys_or_clients_or_see_secrets() {
    let app = spawn_app().await;
    let (_, viewer) = app
        .user_key(
            app.ws,
            sealsync_types::Role::Viewer,
            sealsync_auth::ScopeSet::all(),
        )
        .await;
    let k = app
        .http
        .post(app.ws_url(app.ws, "/apikeys"))
        .bearer_auth(&viewer)
        .json(&json!({"name": "x", "scopes": ["contacts:read"]}))
        .send()
        .await
        .unwrap();
    assert_error(k, StatusCode::FORBIDDEN, "forbidden").await;
    let c = app
        .http
        .post(app.ws_url(app.ws, "/clients"))
        .bearer_auth(&viewer)
        .json(&json!({"name": "x", "scopes": ["contacts:read"]}))
        .send()
        .await
        .unwrap();
    assert_error(c, StatusCode::FORBIDDEN, "forbidden").await;
    let l = app
        .http
        .get(app.ws_url(app.ws, "/clients"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_error(l, StatusCode::FORBIDDEN, "forbidden").await;
    app.stop().await;
}

/// The OpenAPI document is 3.1, served, and documents every route of the scope table.
#[tokio::test]
async fn openapi_documents_every_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for route in sealsync_server::routes::ROUTES {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not documented",
            route.method,
            route.path
        );
        assert!(
            op["responses"]["401"].is_object(),
            "{} {}",
            route.method,
            route.path
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    app.stop().await;
}

/// Admins read the workspace's audit chain and its verification, and key status, over the API.
#[tokio::test]
async fn audit_and_keys_for_admins() {
    let app = spawn_app().await;
    let key = app.owner_key(app.ws).await;
    // Listing workspaces shows the caller's own, and is not a string of denials.
    let listed: Value = app
        .http
        .get(app.url("/v1/workspaces"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "default");
    assert_eq!(listed[0]["role"], "owner");
    // Something to audit.
    let made = app
        .http
        .post(app.ws_url(app.ws, "/contacts"))
        .bearer_auth(&key)
        .json(&json!({"vcard": "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Audited\r\nEND:VCARD\r\n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let page: Value = app
        .http
        .get(app.ws_url(app.ws, "/audit?limit=50"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = page.to_string();
    assert!(text.contains("contact.created"), "{text}");
    assert!(!text.contains("access.denied"), "{text}");
    assert!(
        !text.contains("Audited"),
        "no contact field in the audit log"
    );
    let verify: Value = app
        .http
        .get(app.ws_url(app.ws, "/audit/verify"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    assert!(verify["entries_checked"].as_u64().unwrap() >= 1);
    let keys: Value = app
        .http
        .get(app.ws_url(app.ws, "/keys"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["current"], 1);
    assert_eq!(keys["versions"][0]["records"], 1);
    for path in ["/endpoints", "/links", "/runs", "/conflicts"] {
        let v: Value = app
            .http
            .get(app.ws_url(app.ws, path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, json!([]), "{path}");
    }
    app.stop().await;
}

/// Guessing credentials from one address is cut off with 429; good credentials still work
/// from it meanwhile, and the token endpoint is rate limited too.
#[tokio::test]
async fn guessing_is_rate_limited() {
    let app = spawn_app().await;
    let good = app.owner_key(app.ws).await;
    let url = app.ws_url(app.ws, "/contacts");
    let mut statuses = Vec::new();
    for i in 0..40 {
        let guess = format!("ssk_{:032x}_{}", i, "a".repeat(43));
        statuses.push(
            app.http
                .get(&url)
                .bearer_auth(guess)
                .send()
                .await
                .unwrap()
                .status(),
        );
    }
    assert!(
        statuses[..30]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED)
    );
    let last = app
        .http
        .get(&url)
        .bearer_auth("ssk_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(last.headers()["retry-after"], "2");
    assert_error(last, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let ok = app.http.get(&url).bearer_auth(&good).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let mut limited = false;
    for _ in 0..60 {
        let r = app.token("ssc_x", "sss_y", None).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.json::<Value>().await.unwrap()["error"], "slow_down");
            limited = true;
            break;
        }
    }
    assert!(limited, "the token endpoint is rate limited");
    app.stop().await;
}

/// Password login gives a strict session cookie that works, rotates on the next login, ends on
/// logout; five wrong passwords lock the account (the right one then fails too), and every
/// refusal looks the same.
#[tokio::test]
async fn sessions_and_lockout() {
    let app = spawn_app().await;
    let pw = "correct horse battery staple";
    sealsync_auth::directory::create_user(
        &app.hub,
        "Ann@Example.test",
        Some(secrecy::SecretString::from(pw)),
        Some((app.ws, sealsync_types::Role::Member)),
    )
    .await
    .unwrap();
    let login = |email: &'static str, password: &'static str, cookie: Option<String>| {
        let mut req = app
            .http
            .post(app.url("/v1/session"))
            .json(&json!({"email": email, "password": password}));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    let resp = login("ann@example.test", pw, None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let contacts = app.ws_url(app.ws, "/contacts");
    let ok = app
        .http
        .get(&contacts)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Another workspace stays invisible to a session too.
    let other = app
        .http
        .get(app.ws_url(app.other_ws, "/contacts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    // Logging in again (with the old cookie) rotates: the old session ends.
    let again = login("ann@example.test", pw, Some(cookie.clone()))
        .await
        .unwrap();
    let new_cookie = again.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(new_cookie, cookie);
    let old = app
        .http
        .get(&contacts)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    // Logout ends the new one on the server.
    let out = app
        .http
        .delete(app.url("/v1/session"))
        .header("cookie", &new_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = app
        .http
        .get(&contacts)
        .header("cookie", &new_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // Unknown user and wrong password: the same answer.
    let unknown = login("nobody@example.test", pw, None).await.unwrap();
    let unknown_body = unknown.text().await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let r = login("ann@example.test", "wrong password!!", None)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        bodies.push(r.text().await.unwrap());
    }
    assert!(bodies.iter().all(|b| *b == unknown_body));
    // Locked: even the right password is refused, with the same answer.
    let locked = login("ann@example.test", pw, None).await.unwrap();
    assert_eq!(locked.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(locked.text().await.unwrap(), unknown_body);

    let log =
        serde_json::to_string(&app.audit_entries(sealsync_types::WorkspaceId::NIL).await).unwrap();
    for action in [
        "login.succeeded",
        "login.failed",
        "login.locked_out",
        "session.logout",
    ] {
        assert!(log.contains(action), "{action} missing");
    }
    assert!(!log.contains(pw) && !log.contains("ann@example.test"));
    app.stop().await;
}

/// TOTP: enrol from a session, then a login needs a code; a code works once per step; a
/// recovery code works once.
#[tokio::test]
async fn totp_second_factor() {
    let app = spawn_app().await;
    let pw = "correct horse battery staple";
    sealsync_auth::directory::create_user(
        &app.hub,
        "bo@example.test",
        Some(secrecy::SecretString::from(pw)),
        Some((app.ws, sealsync_types::Role::Viewer)),
    )
    .await
    .unwrap();
    let login = |totp: Option<String>| {
        let mut body = json!({"email": "bo@example.test", "password": pw});
        if let Some(t) = totp {
            body["totp"] = json!(t);
        }
        app.http.post(app.url("/v1/session")).json(&body).send()
    };
    let first = login(None).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let cookie = first.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let start: Value = app
        .http
        .post(app.url("/v1/me/totp"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uri = start["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/sealsync:bo%40example.test?"),
        "{uri}"
    );
    let authenticator = totp_rs::Totp::from_url(uri).unwrap();
    let wrong = app
        .http
        .post(app.url("/v1/me/totp/confirm"))
        .header("cookie", &cookie)
        .json(&json!({"code": "000000"}))
        .send()
        .await
        .unwrap();
    assert_error(wrong, StatusCode::UNPROCESSABLE_ENTITY, "invalid_code").await;
    let now = now_secs() as u64;
    // Confirm with the previous step's code (within the skew), so the current one is fresh.
    let confirm = app
        .http
        .post(app.url("/v1/me/totp/confirm"))
        .header("cookie", &cookie)
        .json(&json!({"code": authenticator.generate(now - 30).to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), StatusCode::OK);
    let codes: Value = confirm.json().await.unwrap();
    let recovery: Vec<String> = codes["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);

    let needs = login(None).await.unwrap();
    assert_error(needs, StatusCode::UNAUTHORIZED, "totp_required").await;
    let bad = login(Some("123456".into())).await.unwrap();
    assert_error(bad, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let code = authenticator.generate(now).to_string();
    assert_eq!(
        login(Some(code.clone())).await.unwrap().status(),
        StatusCode::OK
    );
    let replay = login(Some(code)).await.unwrap();
    assert_error(replay, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(
        login(Some(recovery[3].clone())).await.unwrap().status(),
        StatusCode::OK
    );
    let again = login(Some(recovery[3].clone())).await.unwrap();
    assert_error(again, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    let log =
        serde_json::to_string(&app.audit_entries(sealsync_types::WorkspaceId::NIL).await).unwrap();
    assert!(log.contains("totp.enrolled") && log.contains("totp.failed"));
    assert!(!log.contains(&recovery[0]));
    app.stop().await;
}

/// An owner invites by email; the invitation works once; members are removed (never the last
/// owner); a signed-in user creates a workspace and owns it.
#[tokio::test]
async fn invites_members_and_new_workspaces() {
    let app = spawn_app().await;
    let (owner_id, owner) = app
        .user_key(
            app.ws,
            sealsync_types::Role::Owner,
            sealsync_auth::ScopeSet::all(),
        )
        .await;
    let (_, admin) = app
        .user_key(
            app.ws,
            sealsync_types::Role::Admin,
            sealsync_auth::ScopeSet::all(),
        )
        .await;
    let invite = |key: &str, role: &str| {
        app.http
            .post(app.ws_url(app.ws, "/invites"))
            .bearer_auth(key.to_owned())
            .json(&json!({"email": "Cleo@Example.test", "role": role}))
            .send()
    };
    let denied = invite(&admin, "owner").await.unwrap();
    assert_error(denied, StatusCode::FORBIDDEN, "forbidden").await;
    let made = invite(&admin, "member").await.unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let token = made.json::<Value>().await.unwrap()["invite_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(token.starts_with("ssi_"));
    let accept = |pw: &str| {
        app.http
            .post(app.url("/v1/invites/accept"))
            .json(&json!({"invite_token": token, "password": pw}))
            .send()
    };
    let weak = accept("short").await.unwrap();
    assert_error(weak, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    let ok = accept("a long enough password").await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let joined: Value = ok.json().await.unwrap();
    assert_eq!(joined["role"], "member");
    let cleo = joined["user_id"].as_str().unwrap().to_owned();
    let reused = accept("a long enough password").await.unwrap();
    assert_error(reused, StatusCode::NOT_FOUND, "not_found").await;

    // Cleo signs in and reads contacts.
    let login = app
        .http
        .post(app.url("/v1/session"))
        .json(&json!({"email": "cleo@example.test", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let read = app
        .http
        .get(app.ws_url(app.ws, "/contacts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);

    // She makes a workspace of her own and owns it; an API key cannot.
    let made = app
        .http
        .post(app.url("/v1/workspaces"))
        .header("cookie", &cookie)
        .json(&json!({"name": "cleo-lab"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    assert_eq!(made.json::<Value>().await.unwrap()["role"], "owner");
    let by_key = app
        .http
        .post(app.url("/v1/workspaces"))
        .bearer_auth(&owner)
        .json(&json!({"name": "other-lab"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_key.status(), StatusCode::FORBIDDEN);

    // Removing: Cleo goes; the only owner stays.
    let rm = app
        .http
        .delete(app.ws_url(app.ws, &format!("/members/{cleo}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(rm.status(), StatusCode::NO_CONTENT);
    let gone = app
        .http
        .get(app.ws_url(app.ws, "/contacts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let last = app
        .http
        .delete(app.ws_url(app.ws, &format!("/members/{owner_id}")))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_error(last, StatusCode::CONFLICT, "conflict").await;
    let log = serde_json::to_string(&app.audit_entries(app.ws).await).unwrap();
    for action in ["invite.created", "invite.accepted", "member.removed"] {
        assert!(log.contains(action), "{action}");
    }
    assert!(!log.contains(&token) && !log.contains("cleo@example.test"));
    app.stop().await;
}

/// Deleting a workspace takes the owner and its name typed again; afterwards its keys,
/// credentials and data are gone, while the audit chain remains and verifies.
#[tokio::test]
async fn owners_delete_workspaces() {
    let app = spawn_app().await;
    let (_, admin) = app
        .user_key(
            app.other_ws,
            sealsync_types::Role::Admin,
            sealsync_auth::ScopeSet::all(),
        )
        .await;
    let owner = app.owner_key(app.other_ws).await;
    let url = app.url(&format!("/v1/workspaces/{}", app.other_ws));
    let by_admin = app
        .http
        .delete(&url)
        .bearer_auth(&admin)
        .json(&json!({"confirm": "other"}))
        .send()
        .await
        .unwrap();
    assert_error(by_admin, StatusCode::FORBIDDEN, "forbidden").await;
    let unconfirmed = app
        .http
        .delete(&url)
        .bearer_auth(&owner)
        .json(&json!({"confirm": "default"}))
        .send()
        .await
        .unwrap();
    assert_error(
        unconfirmed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_confirmed",
    )
    .await;
    let done = app
        .http
        .delete(&url)
        .bearer_auth(&owner)
        .json(&json!({"confirm": "other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let after = app
        .http
        .get(app.ws_url(app.other_ws, "/contacts"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "its keys went with it"
    );
    assert!(
        app.hub
            .store()
            .keys_of(app.other_ws)
            .await
            .unwrap()
            .is_empty()
    );
    let log = serde_json::to_string(&app.audit_entries(app.other_ws).await).unwrap();
    assert!(log.contains("workspace.deleted"));
    app.stop().await;
}

/// Checked credentials and roles are reused for a moment; a revocation or role change made
/// through the API takes effect at once, one made elsewhere within two seconds.
#[tokio::test]
async fn cached_credentials_follow_revocations_and_role_changes() {
    let app = spawn_app().await;
    let owner = app.owner_key(app.ws).await;
    let (_, key) = app
        .user_key(
            app.ws,
            sealsync_types::Role::Member,
            sealsync_auth::ScopeSet::all(),
        )
        .await;
    let contacts = app.ws_url(app.ws, "/contacts");
    let card = json!({"vcard": "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Cache\r\nEND:VCARD\r\n"});
    let write = |k: &str| app.http.post(&contacts).bearer_auth(k).json(&card).send();
    assert_eq!(write(&key).await.unwrap().status(), StatusCode::CREATED);

    // The key revokes itself: the next request is refused.
    let listed: Value = app
        .http
        .get(app.ws_url(app.ws, "/apikeys"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let resp = app
        .http
        .delete(app.ws_url(app.ws, &format!("/apikeys/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = app
        .http
        .get(&contacts)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let (member2, key2) = app
        .user_key(
            app.ws,
            sealsync_types::Role::Member,
            sealsync_auth::ScopeSet::all(),
        )
        .await;
    assert_eq!(write(&key2).await.unwrap().status(), StatusCode::CREATED);
    // Demoted to viewer: the next write is refused.
    let resp = app
        .http
        .put(app.ws_url(app.ws, &format!("/members/{member2}")))
        .bearer_auth(&owner)
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_error(
        write(&key2).await.unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // Revoked by another process (straight in the database): refused within two seconds.
    let (owner_id, other) = app
        .user_key(
            app.ws,
            sealsync_types::Role::Owner,
            sealsync_auth::ScopeSet::all(),
        )
        .await;
    let resp = app
        .http
        .get(&contacts)
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let keys = app.hub.store().api_keys_of(app.ws, owner_id).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(
        app.hub
            .store()
            .revoke_api_key(owner_id, &keys[0].id, sealsync_auth::jwt::now_secs())
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let resp = app
        .http
        .get(&contacts)
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;
}
