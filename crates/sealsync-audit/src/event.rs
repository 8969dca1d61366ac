//! Audit events as typed values, and the versioned form they are stored in.
//!
//! Every field is either a closed enum or an id that passed a parser refusing what an email or
//! free text needs (`@`, whitespace, control characters), so an event cannot carry a contact
//! field or a secret by accident. Parse errors never repeat the refused value: it may be the very
//! thing that must not be written down.

use std::fmt;
use std::net::IpAddr;

use sealsync_types::WorkspaceId;
use serde::{Deserialize, Serialize};

use crate::AuditError;

/// One thing that happened: who did what to which resource, from where, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// The workspace it happened in; `None` for installation-wide events (logins, user
    /// administration, workspace creation and deletion), which go in the chain of
    /// [`WorkspaceId::NIL`].
    pub workspace: Option<WorkspaceId>,
    pub actor: Actor,
    pub action: Action,
    pub resource: Option<Resource>,
    pub source: Option<IpAddr>,
    pub outcome: Outcome,
    pub reason: Option<ReasonCode>,
}

impl AuditEvent {
    /// A successful action with no resource, source or reason; set the others as needed.
    pub fn new(workspace: Option<WorkspaceId>, actor: Actor, action: Action) -> Self {
        Self {
            workspace,
            actor,
            action,
            resource: None,
            source: None,
            outcome: Outcome::Success,
            reason: None,
        }
    }

    pub fn with_resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    pub fn with_source(mut self, source: IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    pub fn with_outcome(mut self, outcome: Outcome, reason: Option<ReasonCode>) -> Self {
        self.outcome = outcome;
        self.reason = reason;
        self
    }

    /// The chain this event belongs in.
    pub fn chain(&self) -> WorkspaceId {
        self.workspace.unwrap_or(WorkspaceId::NIL)
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub kind: ActorKind,
    id: String,
}

impl Actor {
    /// An actor by id: a user id, key id or client id. Refuses anything that could be an email,
    /// a name or a secret: see [`parse_id`].
    pub fn new(kind: ActorKind, id: &str) -> Result<Self, AuditError> {
        Ok(Self {
            kind,
            id: parse_id("actor id", id)?,
        })
    }

    /// The installation itself, e.g. `Actor::system("cli")`.
    pub fn system(id: &str) -> Result<Self, AuditError> {
        Self::new(ActorKind::System, id)
    }

    /// Someone not (yet) identified. Deliberately without the name they tried: that may be an
    /// email address or a mistyped password.
    pub fn anonymous() -> Self {
        Self {
            kind: ActorKind::Anonymous,
            id: "-".to_owned(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

/// What kind of principal acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    ApiKey,
    OAuthClient,
    ConnectToken,
    System,
    Anonymous,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::OAuthClient => "oauth_client",
            ActorKind::ConnectToken => "connect_token",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
        }
    }
}

/// Declares [`Action`] with its stable dotted names. The names are stored: never change one,
/// only add.
macro_rules! actions {
    ($($variant:ident => $name:literal,)*) => {
        /// What was done. Stored and shown by its dotted name ([`Action::as_str`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $($variant,)*
        }

        impl Action {
            /// Every action, in declaration order.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            pub fn parse(s: &str) -> Result<Self, AuditError> {
                match s {
                    $($name => Ok(Action::$variant),)*
                    _ => Err(AuditError::Invalid { field: "action", why: "not a known action name" }),
                }
            }
        }
    };
}

actions! {
    LoginSucceeded => "login.succeeded",
    LoginFailed => "login.failed",
    LoginLockedOut => "login.locked_out",
    Logout => "session.logout",
    TotpEnrolled => "totp.enrolled",
    TotpFailed => "totp.failed",
    UserCreated => "user.created",
    UserDisabled => "user.disabled",
    MemberAdded => "member.added",
    MemberRemoved => "member.removed",
    RoleChanged => "member.role_changed",
    ApiKeyCreated => "api_key.created",
    ApiKeyRevoked => "api_key.revoked",
    ApiKeyUsed => "api_key.used",
    ApiKeyRejected => "api_key.rejected",
    ClientCreated => "client.created",
    ClientRevoked => "client.revoked",
    ClientSecretRotated => "client.secret_rotated",
    TokenIssued => "token.issued",
    TokenRejected => "token.rejected",
    TokenRevoked => "token.revoked",
    TokenIntrospected => "token.introspected",
    SigningKeyRotated => "signing_key.rotated",
    WorkspaceCreated => "workspace.created",
    WorkspaceDeleted => "workspace.deleted",
    KeysRotated => "keys.rotated",
    ContactRead => "contact.read",
    ContactCreated => "contact.created",
    ContactUpdated => "contact.updated",
    ContactDeleted => "contact.deleted",
    ContactsExported => "contacts.exported",
    ContactsImported => "contacts.imported",
    EndpointChanged => "endpoint.changed",
    AccountChanged => "account.changed",
    AccountUsed => "account.used",
    LinkChanged => "link.changed",
    RunStarted => "run.started",
    ConflictResolved => "conflict.resolved",
    InviteCreated => "invite.created",
    InviteAccepted => "invite.accepted",
    AccessDenied => "access.denied",
    HookRejected => "hook.rejected",
    ConnectTokenCreated => "connect.token_created",
    ConnectUserRemoved => "connect.user_removed",
    DeliveriesReplayed => "deliveries.replayed",
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Action::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What was acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub kind: ResourceKind,
    id: String,
}

impl Resource {
    /// A resource by id; the same rules as [`Actor::new`].
    pub fn new(kind: ResourceKind, id: &str) -> Result<Self, AuditError> {
        Ok(Self {
            kind,
            id: parse_id("resource id", id)?,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

/// The kinds of resource an event can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Workspace,
    User,
    Member,
    ApiKey,
    Client,
    Token,
    SigningKey,
    Contact,
    Endpoint,
    Account,
    Link,
    Run,
    Conflict,
    Keys,
    ConnectUser,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Workspace => "workspace",
            ResourceKind::User => "user",
            ResourceKind::Member => "member",
            ResourceKind::ApiKey => "api_key",
            ResourceKind::Client => "client",
            ResourceKind::Token => "token",
            ResourceKind::SigningKey => "signing_key",
            ResourceKind::Contact => "contact",
            ResourceKind::Endpoint => "endpoint",
            ResourceKind::Account => "account",
            ResourceKind::Link => "link",
            ResourceKind::Run => "run",
            ResourceKind::Conflict => "conflict",
            ResourceKind::Keys => "keys",
            ResourceKind::ConnectUser => "connect_user",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// Refused by policy or credentials.
    Denied,
    /// Allowed, but it did not work.
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// A machine-readable reason such as `bad_password`, `expired` or `wrong_workspace`: 1 to 64
/// characters of `a-z`, `0-9`, `_`, `.`, `-`. A code, never a message: messages quote input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ReasonCode(String);

impl ReasonCode {
    pub fn parse(s: &str) -> Result<Self, AuditError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(AuditError::Invalid {
                field: "reason",
                why: "must be 1 to 64 characters of a-z, 0-9, '_', '.' or '-'",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest id an actor or resource may have.
pub const MAX_ID_LEN: usize = 128;

/// An id for an actor or resource: 1 to [`MAX_ID_LEN`] characters, no control characters, no
/// whitespace and no `@`. That keeps out emails, names and sentences, the ways personal data
/// would slip into a log meant to hold only references.
fn parse_id(field: &'static str, s: &str) -> Result<String, AuditError> {
    let why = if s.is_empty() {
        "is empty"
    } else if s.chars().count() > MAX_ID_LEN {
        "is longer than 128 characters"
    } else if s.contains('@') {
        "contains '@' (an email address is not an id)"
    } else if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "contains whitespace or control characters"
    } else {
        return Ok(s.to_owned());
    };
    Err(AuditError::Invalid { field, why })
}

/// An event as stored, version 1: the bytes the chain MACs. Field order is fixed by this
/// declaration, so the same event always serializes to the same JSON. The chain (workspace)
/// and time are columns of their own, covered by the MAC, and not repeated here.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredEventV1 {
    pub v: u32,
    pub actor: StoredRef<ActorKind>,
    pub action: Action,
    pub resource: Option<StoredRef<ResourceKind>>,
    pub source: Option<IpAddr>,
    pub outcome: Outcome,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredRef<K> {
    pub kind: K,
    pub id: String,
}

impl StoredEventV1 {
    pub(crate) fn to_json(event: &AuditEvent) -> Result<String, AuditError> {
        let stored = StoredEventV1 {
            v: 1,
            actor: StoredRef {
                kind: event.actor.kind,
                id: event.actor.id.clone(),
            },
            action: event.action,
            resource: event.resource.as_ref().map(|r| StoredRef {
                kind: r.kind,
                id: r.id.clone(),
            }),
            source: event.source,
            outcome: event.outcome,
            reason: event.reason.as_ref().map(|r| r.0.clone()),
        };
        serde_json::to_string(&stored).map_err(|_| AuditError::Invalid {
            field: "event",
            why: "cannot be serialized",
        })
    }

    /// The event in `json`, re-checked by the same parsers as a new one: what is stored is
    /// input like any other.
    pub(crate) fn from_json(chain: WorkspaceId, json: &str) -> Option<AuditEvent> {
        let s: StoredEventV1 = serde_json::from_str(json).ok()?;
        if s.v != 1 {
            return None;
        }
        Some(AuditEvent {
            workspace: (chain != WorkspaceId::NIL).then_some(chain),
            actor: Actor::new(s.actor.kind, &s.actor.id).ok()?,
            action: s.action,
            resource: match s.resource {
                Some(r) => Some(Resource::new(r.kind, &r.id).ok()?),
                None => None,
            },
            source: s.source,
            outcome: s.outcome,
            reason: match s.reason {
                Some(r) => Some(ReasonCode::parse(&r).ok()?),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn action_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert!(seen.insert(a.as_str()), "duplicate name {}", a.as_str());
            assert_eq!(Action::parse(a.as_str()).unwrap(), *a);
            let json = serde_json::to_string(a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), *a);
            assert!(
                a.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{}",
                a.as_str()
            );
        }
        assert_eq!(seen.len(), 45);
        assert!(Action::parse("login.Succeeded").is_err());
        assert!(Action::parse("").is_err());
    }

    #[test]
    fn reason_codes() {
        for ok in ["bad_password", "expired", "wrong_workspace", "a", "v1.2-x"] {
            assert_eq!(ReasonCode::parse(ok).unwrap().as_str(), ok);
        }
        assert!(ReasonCode::parse(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "Bad",
            "bad password",
            "bad\npassword",
            "ann@example.com",
            "é",
        ] {
            assert!(ReasonCode::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ReasonCode::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn ids_refuse_emails_and_free_text() {
        assert_eq!(
            Actor::new(ActorKind::User, "0190a1b2-0000-7000-8000-000000000001")
                .unwrap()
                .id(),
            "0190a1b2-0000-7000-8000-000000000001"
        );
        assert!(Actor::new(ActorKind::ApiKey, "ssk_abc123").is_ok());
        assert!(Resource::new(ResourceKind::Keys, &"k".repeat(128)).is_ok());
        for bad in [
            "a@b.c",
            "",
            "Ann Smith",
            "tab\there",
            "nl\n",
            "\u{7f}",
            "nbsp\u{a0}x",
        ] {
            assert!(Actor::new(ActorKind::User, bad).is_err(), "{bad:?}");
            assert!(Resource::new(ResourceKind::User, bad).is_err(), "{bad:?}");
        }
        assert!(Actor::new(ActorKind::User, &"k".repeat(129)).is_err());
    }

    #[test]
    fn refusals_do_not_repeat_the_value() {
        let err = Actor::new(ActorKind::User, "ann@example.com").unwrap_err();
        assert!(!err.to_string().contains("example.com"), "{err}");
        let err = ReasonCode::parse("Secret Sauce").unwrap_err();
        assert!(!err.to_string().contains("Secret"), "{err}");
    }

    #[test]
    fn stored_form_round_trips_with_fixed_field_order() {
        let ws = WorkspaceId::new();
        let event = AuditEvent::new(
            Some(ws),
            Actor::new(ActorKind::ApiKey, "ssk_1").unwrap(),
            Action::ApiKeyRejected,
        )
        .with_resource(Resource::new(ResourceKind::ApiKey, "ssk_1").unwrap())
        .with_source("192.0.2.7".parse().unwrap())
        .with_outcome(Outcome::Denied, Some(ReasonCode::parse("expired").unwrap()));
        let json = StoredEventV1::to_json(&event).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"actor":{"kind":"api_key","id":"ssk_1"},"action":"api_key.rejected","resource":{"kind":"api_key","id":"ssk_1"},"source":"192.0.2.7","outcome":"denied","reason":"expired"}"#
        );
        assert_eq!(StoredEventV1::from_json(ws, &json).unwrap(), event);
        // An installation event comes back without a workspace.
        let install = AuditEvent::new(None, Actor::anonymous(), Action::LoginFailed);
        let json = StoredEventV1::to_json(&install).unwrap();
        assert_eq!(
            StoredEventV1::from_json(WorkspaceId::NIL, &json).unwrap(),
            install
        );
        // Stored ids go through the same parser: an email smuggled into the row is refused.
        let smuggled = json.replace("\"-\"", "\"a@b.c\"");
        assert!(StoredEventV1::from_json(WorkspaceId::NIL, &smuggled).is_none());
    }
}
