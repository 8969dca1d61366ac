//! Scopes, roles and the one function that decides whether a principal may act.
//!
//! Every route names one [`Scope`]; each scope needs a minimum workspace role. A user (by
//! session or API key) acts with its role in the workspace, narrowed by the key's scopes; an
//! OAuth client acts only in its own workspace, with its token's scopes. A workspace the
//! principal cannot see answers [`Denial::NotFound`], so nothing tells an outsider it exists.

use std::collections::BTreeSet;
use std::fmt;

use sealsync_types::{Role, WorkspaceId};

/// What a route does, in OAuth-scope terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    WorkspacesRead,
    /// Deleting the workspace (owners only).
    WorkspacesWrite,
    MembersRead,
    MembersWrite,
    ApiKeysWrite,
    ClientsRead,
    ClientsWrite,
    ContactsRead,
    ContactsWrite,
    EndpointsRead,
    EndpointsWrite,
    RunsRead,
    RunsWrite,
    KeysRead,
    KeysWrite,
    AuditRead,
}

impl Scope {
    pub const ALL: [Scope; 16] = [
        Scope::WorkspacesRead,
        Scope::WorkspacesWrite,
        Scope::MembersRead,
        Scope::MembersWrite,
        Scope::ApiKeysWrite,
        Scope::ClientsRead,
        Scope::ClientsWrite,
        Scope::ContactsRead,
        Scope::ContactsWrite,
        Scope::EndpointsRead,
        Scope::EndpointsWrite,
        Scope::RunsRead,
        Scope::RunsWrite,
        Scope::KeysRead,
        Scope::KeysWrite,
        Scope::AuditRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::WorkspacesRead => "workspaces:read",
            Scope::WorkspacesWrite => "workspaces:write",
            Scope::MembersRead => "members:read",
            Scope::MembersWrite => "members:write",
            Scope::ApiKeysWrite => "apikeys:write",
            Scope::ClientsRead => "clients:read",
            Scope::ClientsWrite => "clients:write",
            Scope::ContactsRead => "contacts:read",
            Scope::ContactsWrite => "contacts:write",
            Scope::EndpointsRead => "endpoints:read",
            Scope::EndpointsWrite => "endpoints:write",
            Scope::RunsRead => "runs:read",
            Scope::RunsWrite => "runs:write",
            Scope::KeysRead => "keys:read",
            Scope::KeysWrite => "keys:write",
            Scope::AuditRead => "audit:read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The least workspace role that may use this scope.
    pub fn min_role(self) -> Role {
        match self {
            Scope::WorkspacesRead
            | Scope::MembersRead
            | Scope::ContactsRead
            | Scope::EndpointsRead
            | Scope::RunsRead => Role::Viewer,
            Scope::ApiKeysWrite
            | Scope::ContactsWrite
            | Scope::EndpointsWrite
            | Scope::RunsWrite => Role::Member,
            Scope::MembersWrite
            | Scope::ClientsRead
            | Scope::ClientsWrite
            | Scope::KeysRead
            | Scope::KeysWrite
            | Scope::AuditRead => Role::Admin,
            Scope::WorkspacesWrite => Role::Owner,
        }
    }

    /// Whether an OAuth client may hold this scope. Clients are programs bound to one
    /// workspace: they never manage people, credentials or keys.
    pub fn grantable_to_client(self) -> bool {
        !matches!(
            self,
            Scope::WorkspacesWrite
                | Scope::MembersWrite
                | Scope::ApiKeysWrite
                | Scope::ClientsRead
                | Scope::ClientsWrite
                | Scope::KeysWrite
        )
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes, written space- or comma-separated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    pub fn all() -> Self {
        Self(Scope::ALL.into_iter().collect())
    }

    /// Parses `a:read b:write` or `a:read,b:write`; an unknown scope is an error naming it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for part in s.split([' ', ',']).filter(|p| !p.is_empty()) {
            set.insert(Scope::parse(part).ok_or_else(|| {
                format!(
                    "unknown scope {:?}",
                    part.chars().take(40).collect::<String>()
                )
            })?);
        }
        Ok(Self(set))
    }

    pub fn contains(&self, s: Scope) -> bool {
        self.0.contains(&s)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// Space-separated, as in OAuth.
    pub fn to_oauth(&self) -> String {
        self.0
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The scopes of `self` that `other` also has.
    pub fn intersect(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&other.0).copied().collect())
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// What kind of credential a request came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A user's API key (`ssk_…`).
    ApiKey,
    /// An OAuth client's access token (JWT).
    OAuthClient,
    /// A user's web-console session.
    Session,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ApiKey => "api_key",
            PrincipalKind::OAuthClient => "oauth_client",
            PrincipalKind::Session => "session",
        }
    }
}

/// Who is making a request, resolved from its credential.
#[derive(Debug, Clone)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The credential's public id: key id or client id.
    pub id: String,
    /// The user acting (API keys and sessions).
    pub user: Option<uuid::Uuid>,
    /// The one workspace an OAuth client or API key is bound to.
    pub workspace: Option<WorkspaceId>,
    /// What the credential allows, before roles.
    pub scopes: ScopeSet,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The workspace (or resource) is not visible to this principal: answered as 404.
    NotFound,
    /// Visible, but the role is too low: answered as 403.
    Role,
    /// Visible, but the credential lacks the scope: answered as 403 `insufficient_scope`.
    Scope,
}

/// Decides whether `principal` may use `scope` in workspace `ws`, where `role` is the
/// principal's user's membership role there (`None`: not a member, or not a user).
pub fn authorize(
    principal: &Principal,
    ws: WorkspaceId,
    role: Option<Role>,
    scope: Scope,
) -> Result<(), Denial> {
    match principal.kind {
        PrincipalKind::OAuthClient => {
            if principal.workspace != Some(ws) {
                return Err(Denial::NotFound);
            }
            if !principal.scopes.contains(scope) || !scope.grantable_to_client() {
                return Err(Denial::Scope);
            }
            Ok(())
        }
        PrincipalKind::ApiKey | PrincipalKind::Session => {
            // An API key is bound to the workspace it was made in.
            if principal.workspace.is_some_and(|w| w != ws) {
                return Err(Denial::NotFound);
            }
            let role = role.ok_or(Denial::NotFound)?;
            if !role.at_least(scope.min_role()) {
                return Err(Denial::Role);
            }
            if !principal.scopes.contains(scope) {
                return Err(Denial::Scope);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(scopes: ScopeSet) -> Principal {
        Principal {
            kind: PrincipalKind::ApiKey,
            id: "k".into(),
            user: Some(uuid::Uuid::new_v4()),
            workspace: None,
            scopes,
        }
    }

    #[test]
    fn scope_names_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert!(ScopeSet::parse("contacts:read, nope").is_err());
        let set = ScopeSet::parse("contacts:read contacts:write").unwrap();
        assert_eq!(set.to_oauth(), "contacts:read contacts:write");
    }

    #[test]
    fn roles_gate_scopes() {
        let ws = WorkspaceId::new();
        let p = user(ScopeSet::all());
        for scope in Scope::ALL {
            for role in [Role::Viewer, Role::Member, Role::Admin, Role::Owner] {
                let r = authorize(&p, ws, Some(role), scope);
                assert_eq!(r.is_ok(), role >= scope.min_role(), "{role:?} {scope:?}");
            }
            assert_eq!(authorize(&p, ws, None, scope), Err(Denial::NotFound));
        }
        // A viewer can never create keys or read secrets-bearing resources.
        assert_eq!(
            authorize(&p, ws, Some(Role::Viewer), Scope::ApiKeysWrite),
            Err(Denial::Role)
        );
        let narrow = user(ScopeSet::parse("contacts:read").unwrap());
        assert_eq!(
            authorize(&narrow, ws, Some(Role::Owner), Scope::ContactsWrite),
            Err(Denial::Scope)
        );
    }

    #[test]
    fn clients_stay_in_their_workspace() {
        let ws = WorkspaceId::new();
        let p = Principal {
            kind: PrincipalKind::OAuthClient,
            id: "c".into(),
            user: None,
            workspace: Some(ws),
            scopes: ScopeSet::all(),
        };
        assert!(authorize(&p, ws, None, Scope::ContactsRead).is_ok());
        assert_eq!(
            authorize(&p, WorkspaceId::new(), None, Scope::ContactsRead),
            Err(Denial::NotFound)
        );
        assert_eq!(
            authorize(&p, ws, None, Scope::ClientsWrite),
            Err(Denial::Scope)
        );
    }
}
