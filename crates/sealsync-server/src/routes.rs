//! The route table: every `/v1` route, its method and the scope it needs. The router is built
//! from the same handlers, and the role × route matrix test is generated from this table.

use axum::Router;
use axum::routing::{get, post, put};
use sealsync_auth::Scope;

use crate::state::AppState;
use crate::{connect, deliveries, grants, hooks, oauth, ops, session, sso, v1};

/// One API route and the scope it requires.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    /// Path template; `{ws}` is a workspace id, other `{…}` are resource ids.
    pub path: &'static str,
    pub scope: Scope,
}

const fn r(method: &'static str, path: &'static str, scope: Scope) -> RouteSpec {
    RouteSpec {
        method,
        path,
        scope,
    }
}

/// Every workspace route. (`GET /v1/workspaces` lists what the caller can see and needs
/// `workspaces:read` in each.)
pub const ROUTES: &[RouteSpec] = &[
    r("DELETE", "/v1/workspaces/{ws}", Scope::WorkspacesWrite),
    r("GET", "/v1/workspaces/{ws}/members", Scope::MembersRead),
    r(
        "PUT",
        "/v1/workspaces/{ws}/members/{user}",
        Scope::MembersWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/apikeys", Scope::WorkspacesRead),
    r("POST", "/v1/workspaces/{ws}/apikeys", Scope::ApiKeysWrite),
    r(
        "DELETE",
        "/v1/workspaces/{ws}/apikeys/{id}",
        Scope::ApiKeysWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/clients", Scope::ClientsRead),
    r("POST", "/v1/workspaces/{ws}/clients", Scope::ClientsWrite),
    r(
        "DELETE",
        "/v1/workspaces/{ws}/clients/{id}",
        Scope::ClientsWrite,
    ),
    r(
        "POST",
        "/v1/workspaces/{ws}/clients/{id}/secret",
        Scope::ClientsWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/contacts", Scope::ContactsRead),
    r("POST", "/v1/workspaces/{ws}/contacts", Scope::ContactsWrite),
    r(
        "POST",
        "/v1/workspaces/{ws}/contacts/find",
        Scope::ContactsRead,
    ),
    r(
        "GET",
        "/v1/workspaces/{ws}/contacts/{id}",
        Scope::ContactsRead,
    ),
    r(
        "PUT",
        "/v1/workspaces/{ws}/contacts/{id}",
        Scope::ContactsWrite,
    ),
    r(
        "DELETE",
        "/v1/workspaces/{ws}/contacts/{id}",
        Scope::ContactsWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/endpoints", Scope::EndpointsRead),
    r("GET", "/v1/workspaces/{ws}/egress", Scope::EndpointsRead),
    r("PUT", "/v1/workspaces/{ws}/egress", Scope::EndpointsWrite),
    r(
        "PUT",
        "/v1/workspaces/{ws}/endpoints/{name}",
        Scope::EndpointsWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/accounts", Scope::EndpointsRead),
    r(
        "PUT",
        "/v1/workspaces/{ws}/accounts/{name}",
        Scope::EndpointsWrite,
    ),
    r(
        "DELETE",
        "/v1/workspaces/{ws}/accounts/{name}",
        Scope::EndpointsWrite,
    ),
    r(
        "POST",
        "/v1/workspaces/{ws}/accounts/{name}/authorize",
        Scope::EndpointsWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/links", Scope::EndpointsRead),
    r(
        "PUT",
        "/v1/workspaces/{ws}/links/{name}",
        Scope::EndpointsWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/deliveries", Scope::RunsRead),
    r(
        "POST",
        "/v1/workspaces/{ws}/deliveries/replay",
        Scope::RunsWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/runs", Scope::RunsRead),
    r("POST", "/v1/workspaces/{ws}/runs", Scope::RunsWrite),
    r("GET", "/v1/workspaces/{ws}/runs/{id}", Scope::RunsRead),
    r(
        "GET",
        "/v1/workspaces/{ws}/runs/{id}/events",
        Scope::RunsRead,
    ),
    r(
        "DELETE",
        "/v1/workspaces/{ws}/links/{name}",
        Scope::EndpointsWrite,
    ),
    r(
        "DELETE",
        "/v1/workspaces/{ws}/endpoints/{name}",
        Scope::EndpointsWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/conflicts", Scope::RunsRead),
    r(
        "POST",
        "/v1/workspaces/{ws}/conflicts/{id}/resolve",
        Scope::RunsWrite,
    ),
    r("GET", "/v1/workspaces/{ws}/keys", Scope::KeysRead),
    r("GET", "/v1/workspaces/{ws}/audit", Scope::AuditRead),
    r("GET", "/v1/workspaces/{ws}/audit/verify", Scope::AuditRead),
    r("POST", "/v1/workspaces/{ws}/invites", Scope::MembersWrite),
    r(
        "DELETE",
        "/v1/workspaces/{ws}/members/{user}",
        Scope::MembersWrite,
    ),
];

/// The API routes (without the outer layers).
pub fn api() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/v1/session", post(session::login).delete(session::logout))
        .route("/v1/sso/login", get(sso::login))
        .route("/v1/sso/callback", get(sso::callback))
        .route("/v1/me/totp", post(session::totp_begin))
        .route("/v1/me/totp/confirm", post(session::totp_confirm))
        .route(
            "/v1/workspaces",
            get(v1::list_workspaces).post(v1::create_workspace),
        )
        .route(
            "/v1/workspaces/{ws}",
            axum::routing::delete(v1::delete_workspace),
        )
        .route("/v1/workspaces/{ws}/members", get(v1::list_members))
        .route(
            "/v1/workspaces/{ws}/members/{user}",
            put(v1::put_member).delete(v1::remove_member),
        )
        .route("/v1/workspaces/{ws}/invites", post(v1::create_invite))
        .route("/v1/invites/accept", post(session::accept_invite))
        .route(
            "/v1/workspaces/{ws}/apikeys",
            get(v1::list_api_keys).post(v1::create_api_key),
        )
        .route(
            "/v1/workspaces/{ws}/apikeys/{id}",
            axum::routing::delete(v1::revoke_api_key),
        )
        .route(
            "/v1/workspaces/{ws}/clients",
            get(v1::list_clients).post(v1::create_client),
        )
        .route(
            "/v1/workspaces/{ws}/clients/{id}",
            axum::routing::delete(v1::revoke_client),
        )
        .route(
            "/v1/workspaces/{ws}/clients/{id}/secret",
            post(v1::rotate_client_secret),
        )
        .route(
            "/v1/workspaces/{ws}/contacts",
            get(v1::list_contacts).post(v1::create_contact),
        )
        .route("/v1/workspaces/{ws}/contacts/find", post(v1::find_contacts))
        .route(
            "/v1/workspaces/{ws}/contacts/{id}",
            get(v1::get_contact)
                .put(v1::update_contact)
                .delete(v1::delete_contact),
        )
        .route("/v1/workspaces/{ws}/endpoints", get(ops::list_endpoints))
        .route(
            "/v1/workspaces/{ws}/egress",
            get(ops::get_egress).put(ops::put_egress),
        )
        .route(
            "/v1/workspaces/{ws}/endpoints/{name}",
            put(ops::put_endpoint).delete(ops::delete_endpoint),
        )
        .route("/v1/workspaces/{ws}/accounts", get(ops::list_accounts))
        .route(
            "/v1/workspaces/{ws}/accounts/{name}",
            put(ops::put_account).delete(ops::delete_account),
        )
        .route(
            "/v1/workspaces/{ws}/accounts/{name}/authorize",
            post(grants::authorize),
        )
        .route("/v1/oauth/callback", get(grants::callback))
        .route("/connect/oauth", get(connect::start_oauth))
        .route("/v1/workspaces/{ws}/links", get(ops::list_links))
        .route(
            "/v1/workspaces/{ws}/links/{name}",
            put(ops::put_link).delete(ops::delete_link),
        )
        .route(
            "/v1/workspaces/{ws}/runs",
            get(ops::list_runs).post(ops::start_run),
        )
        .route("/v1/workspaces/{ws}/runs/{id}", get(ops::get_run))
        .route(
            "/v1/workspaces/{ws}/deliveries",
            get(deliveries::list_deliveries),
        )
        .route(
            "/v1/workspaces/{ws}/deliveries/replay",
            post(deliveries::replay_deliveries),
        )
        .route("/v1/workspaces/{ws}/runs/{id}/events", get(ops::run_events))
        .route("/v1/workspaces/{ws}/conflicts", get(ops::list_conflicts))
        .route(
            "/v1/workspaces/{ws}/conflicts/{id}/resolve",
            post(ops::resolve_conflict),
        )
        .route("/v1/workspaces/{ws}/keys", get(ops::keys_status))
        .route("/v1/workspaces/{ws}/audit", get(ops::audit_page))
        .route("/v1/workspaces/{ws}/audit/verify", get(ops::audit_verify))
        .route("/v1/hooks/{endpoint}", post(hooks::deliver))
        .route("/v1/connect/tokens", post(connect::create_token))
        .route("/v1/connect/accounts", post(connect::connect_via_api))
        .route(
            "/v1/connect/users/{external_user_id}",
            axum::routing::delete(connect::remove_user),
        )
        .route(
            "/connect",
            get(connect::show_page).post(connect::submit_page),
        )
}
