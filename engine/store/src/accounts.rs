//! Users, API tokens, sessions and security events: the data of the people
//! layer, kept in the main store like everything else so that a change is
//! one durable transaction and the server's memory can follow it exactly.

use flowform_core::Time;
use serde::{Deserialize, Serialize};

/// A user of the application, managed by admins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAccount {
    pub id: String,
    /// The display name shown to other users.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// `zh-CN` or `en`; the app's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A disabled user cannot sign in, and their tokens and sessions stop working.
    #[serde(default)]
    pub disabled: bool,
    /// Argon2id PHC string; `None`: no password (tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub created_at: Time,
    #[serde(default)]
    pub updated_at: Time,
}

/// An API token: only its SHA-256 hash is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public id, to list and revoke it (`tok_…`); not the secret.
    pub id: String,
    pub hash: String,
    pub user: String,
    pub name: String,
    pub created_at: Time,
    pub expires_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
}

/// A signed-in browser: only the SHA-256 hash of its cookie is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub hash: String,
    pub user: String,
    pub created_at: Time,
    /// The last request, as last written (written at most every few minutes).
    pub seen_at: Time,
    /// The token forms of this session carry against cross-site requests.
    pub csrf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One security event: sign-in, token, user change, permission denied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Numbered by the store.
    #[serde(default)]
    pub seq: u64,
    pub at: Time,
    /// `login`, `login_failed`, `logout`, `token_created`, `token_revoked`,
    /// `user_created`, `user_changed`, `user_disabled`, `password_changed`,
    /// `sessions_ended`, `permission_denied`.
    pub kind: String,
    /// Who did it (a user id, `cli`, or the name tried at a failed sign-in).
    pub actor: String,
    /// What it was done to (a user, a token id, a route).
    #[serde(default)]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One change of the account tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOp {
    PutUser(UserAccount),
    PutToken(TokenRecord),
    PutSession(SessionRecord),
    DeleteSession(String),
    /// Ends every session of a user.
    DeleteSessionsOf(String),
    /// Records a session's last request, if the session still exists.
    TouchSession {
        hash: String,
        seen_at: Time,
    },
}
