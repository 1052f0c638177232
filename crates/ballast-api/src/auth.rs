//! Access control: API tokens, roles per namespace, and what the caller may do.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A role held in a namespace (or in every namespace, `*`).
///
/// Roles are not ranked into one ladder: `reviewer` approves transition requests and is kept apart
/// from `writer` and `maintainer` so that the people who build a model need not be the people who
/// let it through. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// View models, versions, files, aliases, audit and events.
    Reader,
    /// Reader, plus create models and versions, upload files, edit tags and drafts, seal.
    Writer,
    /// Reader, plus approve or reject transition requests.
    Reviewer,
    /// Writer, plus promote, roll back, set aliases, edit policies, complete transition requests.
    Maintainer,
    /// Everything, including tokens, roles and webhooks.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 5] = [
        Role::Reader,
        Role::Writer,
        Role::Reviewer,
        Role::Maintainer,
        Role::Admin,
    ];

    /// The role's name as written in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Reviewer => "reviewer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }

    /// Whether holding this role grants `perm`.
    #[must_use]
    pub fn grants(self, perm: Permission) -> bool {
        match perm {
            Permission::Read => true,
            Permission::Write => matches!(self, Role::Writer | Role::Maintainer | Role::Admin),
            Permission::Review => matches!(self, Role::Reviewer | Role::Admin),
            Permission::Maintain => matches!(self, Role::Maintainer | Role::Admin),
            Permission::Admin => self == Role::Admin,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            format!("unknown role {s:?}; roles are reader, writer, reviewer, maintainer, admin")
        })
    }
}

/// What an operation needs, granted by roles (see [`Role::grants`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// View.
    Read,
    /// Create and change drafts, tags, uploads.
    Write,
    /// Approve or reject transition requests.
    Review,
    /// Promote, roll back, aliases, policies.
    Maintain,
    /// Tokens, roles, webhooks.
    Admin,
}

impl Permission {
    /// The permission's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Review => "review",
            Permission::Maintain => "maintain",
            Permission::Admin => "admin",
        }
    }
}

/// The namespace pattern that matches every namespace.
pub const ANY_NAMESPACE: &str = "*";

/// A role granted to a principal in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleBinding {
    /// Who (the principal named by tokens).
    pub principal: String,
    /// A namespace, or `*` for all.
    pub namespace: String,
    /// The role.
    pub role: Role,
    /// When it was granted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub granted_at: String,
    /// Who granted it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub granted_by: String,
}

/// Grant or revoke a role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRole {
    /// Who.
    pub principal: String,
    /// A namespace, or `*` for all.
    pub namespace: String,
    /// The role.
    pub role: Role,
}

/// Role bindings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleList {
    /// The bindings, by principal, namespace, role.
    pub roles: Vec<RoleBinding>,
}

/// Create a token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Who the token acts as (recorded as the actor of every change made with it).
    pub principal: String,
    /// What the token is for.
    #[serde(default)]
    pub description: String,
    /// When it stops working (RFC 3339); absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Roles to grant the principal at the same time (in the same transaction).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<GrantRoleIn>,
}

/// A role granted along with a new token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRoleIn {
    /// A namespace, or `*`.
    pub namespace: String,
    /// The role.
    pub role: Role,
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// Id (for revocation).
    pub id: u64,
    /// Who it acts as.
    pub principal: String,
    /// What it is for.
    pub description: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// When it was created.
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// When it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token.
    #[serde(flatten)]
    pub token: Token,
    /// The secret to send as `Authorization: Bearer <secret>`. It is stored only as a hash and
    /// cannot be shown again.
    pub secret: String,
}

/// Tokens.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// By id.
    pub tokens: Vec<Token>,
}

/// Who the caller is and what they hold.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// The principal (the actor recorded for changes).
    pub principal: String,
    /// Whether the server checks tokens at all (`false` under `--auth off`).
    pub auth: bool,
    /// The roles the principal holds.
    pub roles: Vec<RoleBinding>,
}

/// Whether `s` is a valid principal name: 1-128 characters of `[A-Za-z0-9._@+-]`, which keeps
/// principals readable in audit entries and unambiguous in headers.
#[must_use]
pub fn is_principal(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'))
}

/// Whether `s` is a valid namespace pattern for a role: `*` or a namespace name.
#[must_use]
pub fn is_namespace_pattern(s: &str) -> bool {
    s == ANY_NAMESPACE || ballast_core::validate_namespace(s).is_ok()
}
