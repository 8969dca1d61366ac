//! The OpenAPI 3.1 description, generated from the handlers' annotations and served at
//! `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// The error envelope every `/v1` error uses.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ErrorEnvelope {
    error: ErrorBody,
}

/// A stable machine-readable code and a message for people.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// Stable code, e.g. `not_found`, `forbidden`, `insufficient_scope`, `invalid_body`.
    code: String,
    message: String,
}

/// OAuth's own error format (RFC 6749 §5.2).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct OAuthErrorBody {
    error: String,
    error_description: String,
}

/// The errors any authenticated `/v1` route can answer.
#[derive(Debug, IntoResponses)]
#[allow(dead_code)]
pub enum ApiErrors {
    /// Malformed request (bad JSON, bad query).
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// No valid credential.
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// Role or scope too low.
    #[response(status = 403)]
    Forbidden(ErrorEnvelope),
    /// No such resource in a workspace the caller can see.
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// Body larger than the limit.
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
    /// Body not sent as JSON.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorEnvelope),
    /// Body of the wrong shape or with invalid values.
    #[response(status = 422)]
    Invalid(ErrorEnvelope),
    /// Too many failed authentications from this address.
    #[response(status = 429)]
    RateLimited(ErrorEnvelope),
}

/// The errors of the OAuth endpoints.
#[derive(Debug, IntoResponses)]
#[allow(dead_code)]
pub enum OAuthErrors {
    #[response(status = 400)]
    BadRequest(OAuthErrorBody),
    #[response(status = 401)]
    InvalidClient(OAuthErrorBody),
    #[response(status = 429)]
    SlowDown(OAuthErrorBody),
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An OAuth access token (JWT, from /oauth/token) or a user API key (ssk_…).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "client",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "sealsync API", description = "Contacts kept in sync and sealed: workspaces, members, API keys, OAuth clients and contacts."),
    paths(
        crate::oauth::token,
        crate::oauth::revoke,
        crate::oauth::introspect,
        crate::oauth::jwks,
        crate::session::login,
        crate::session::logout,
        crate::sso::login,
        crate::sso::callback,
        crate::session::totp_begin,
        crate::session::totp_confirm,
        crate::v1::list_workspaces,
        crate::v1::create_workspace,
        crate::v1::delete_workspace,
        crate::v1::remove_member,
        crate::v1::create_invite,
        crate::session::accept_invite,
        crate::v1::list_members,
        crate::v1::put_member,
        crate::v1::create_api_key,
        crate::v1::list_api_keys,
        crate::v1::revoke_api_key,
        crate::v1::create_client,
        crate::v1::list_clients,
        crate::v1::revoke_client,
        crate::v1::rotate_client_secret,
        crate::v1::list_contacts,
        crate::v1::get_contact,
        crate::v1::create_contact,
        crate::v1::update_contact,
        crate::v1::delete_contact,
        crate::v1::find_contacts,
        crate::ops::list_endpoints,
        crate::ops::get_egress,
        crate::ops::put_egress,
        crate::deliveries::list_deliveries,
        crate::grants::authorize,
        crate::deliveries::replay_deliveries,
        crate::ops::put_endpoint,
        crate::ops::delete_endpoint,
        crate::ops::list_accounts,
        crate::ops::put_account,
        crate::ops::delete_account,
        crate::ops::list_links,
        crate::ops::put_link,
        crate::ops::delete_link,
        crate::ops::list_runs,
        crate::ops::start_run,
        crate::ops::get_run,
        crate::ops::run_events,
        crate::ops::list_conflicts,
        crate::ops::resolve_conflict,
        crate::ops::keys_status,
        crate::ops::audit_page,
        crate::ops::audit_verify,
        crate::hooks::deliver,
        crate::connect::create_token,
        crate::connect::connect_via_api,
        crate::connect::remove_user,
    ),
    components(schemas(ErrorEnvelope, ErrorBody, OAuthErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
