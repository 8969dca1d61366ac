//! The role × route matrix, generated from the scope table: every role on every route, and a
//! member of another workspace on every route.

use reqwest::{Method, StatusCode};
use sealsync_auth::{ClientId, KeyId, ScopeSet};
use sealsync_server::routes::ROUTES;
use sealsync_types::{ContactId, Role, UserId};
use serde_json::{Value, json};

use crate::harness::spawn_app;

const CARD: &str = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Matrix\r\nEND:VCARD\r\n";

fn body_for(method: &str, path: &str) -> Option<Value> {
    if method == "PUT" && path.contains("/endpoints/") {
        return Some(json!({"kind": "vdir", "path": "m"}));
    }
    if method == "PUT" && path.contains("/accounts/") {
        return Some(json!({"kind": "api-key", "key": "matrix-key-0123456789"}));
    }
    if method == "PUT" && path.contains("/links/") {
        return Some(json!({"endpoint": "m", "direction": "pull"}));
    }
    match (method, path.rsplit('/').next()) {
        ("POST", Some("runs")) => Some(json!({"link": "m"})),
        ("POST", Some("resolve")) => Some(json!({"take": "hub"})),
        ("PUT", Some("{user}")) => Some(json!({"role": "viewer"})),
        ("POST", Some("apikeys")) => Some(json!({"name": "m", "scopes": ["contacts:read"]})),
        ("POST", Some("clients")) => Some(json!({"name": "m", "scopes": ["contacts:read"]})),
        ("POST", Some("contacts")) | ("PUT", Some("{id}")) => Some(json!({"vcard": CARD})),
        ("POST", Some("find")) => Some(json!({"email": "x@example.com"})),
        ("PUT", Some("egress")) => Some(json!({"hosts": null})),
        ("POST", Some("replay")) => Some(json!({})),
        ("POST", Some("authorize")) => Some(json!({"app": "m"})),
        ("DELETE", Some("{ws}")) => Some(json!({"confirm": "not-the-name"})),
        ("POST", Some("invites")) => Some(json!({"email": "new@example.com", "role": "viewer"})),
        _ => None,
    }
}

#[tokio::test]
async fn every_role_on_every_route() {
    let app = spawn_app().await;
    let roles = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];
    let mut keys = Vec::new();
    for role in roles {
        keys.push((
            Some(role),
            app.user_key(app.ws, role, ScopeSet::all()).await.1,
        ));
    }
    // An owner elsewhere is nobody here.
    keys.push((
        None,
        app.user_key(app.other_ws, Role::Owner, ScopeSet::all())
            .await
            .1,
    ));

    let mut checked = 0;
    for route in ROUTES {
        for (role, key) in &keys {
            let id = if route.path.contains("/clients/") {
                ClientId::new(app.ws).to_string()
            } else if route.path.contains("/apikeys/") {
                KeyId::new().to_string()
            } else {
                ContactId::new().to_string()
            };
            let path = route
                .path
                .replace("{ws}", &app.ws.to_string())
                .replace("{user}", &UserId::new().to_string())
                .replace("{name}", "m")
                .replace("{id}", &id);
            let method = Method::from_bytes(route.method.as_bytes()).unwrap();
            let mut req = app.http.request(method, app.url(&path)).bearer_auth(key);
            if route.method == "PUT" && route.path.ends_with("{id}") {
                req = req.header("if-match", "\"1\"");
            }
            if let Some(b) = body_for(route.method, route.path) {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let what = format!("{} {} as {role:?}", route.method, route.path);
            assert!(!status.is_server_error(), "{what}: {status}");
            match role {
                None => assert_eq!(status, StatusCode::NOT_FOUND, "{what}"),
                Some(r) if !r.at_least(route.scope.min_role()) => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                    let v: Value = resp.json().await.unwrap();
                    assert_eq!(v["error"]["code"], "forbidden", "{what}");
                }
                Some(_) => assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{what}: {status}"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * keys.len());
    app.stop().await;
}
