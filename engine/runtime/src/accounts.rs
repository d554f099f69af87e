//! The people layer: users, passwords, API tokens, browser sessions and the
//! audit log.
//!
//! The store holds the truth (one durable transaction per change); the
//! runtime keeps all of it in memory so that authenticating a request costs a
//! hash and a map lookup, never a disk read. Every change goes through the
//! methods here, which write the store first and then the memory, so that a
//! disabled user or a revoked token is refused on the very next request.

use crate::Runtime;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use flowform_core::{Actor, Time};
use flowform_store::{AuditEntry, AuthOp, Job, SessionRecord, StoreError, TokenRecord, UserAccount};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// How long a browser session lasts without a request.
pub const SESSION_IDLE: SignedDuration = SignedDuration::from_hours(12);
/// How long a browser session lasts at most, however active.
pub const SESSION_ABSOLUTE: SignedDuration = SignedDuration::from_hours(7 * 24);
/// The default lifetime of an API token, in days.
pub const TOKEN_DEFAULT_DAYS: i64 = 90;
/// The longest lifetime an API token may be given, in days.
pub const TOKEN_MAX_DAYS: i64 = 3650;
/// Failed sign-ins allowed per user name and per client address in
/// [`THROTTLE_WINDOW`] before further attempts are refused until it ends.
pub const THROTTLE_FAILURES: u32 = 5;
pub const THROTTLE_WINDOW: SignedDuration = SignedDuration::from_mins(15);
/// A session's last request is written to the store at most this often.
const SEEN_WRITE_EVERY: SignedDuration = SignedDuration::from_mins(5);
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_BYTES: usize = 1024;

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no user `{0}`")]
    NoUser(String),
    #[error("a user `{0}` exists already")]
    UserExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no token `{0}`")]
    NoToken(String),
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many failed sign-ins; try again in {minutes} minute(s)")]
    Throttled { minutes: i64 },
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an admin sends to create a user.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// What an admin sends to change a user; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub teams: Option<Vec<String>>,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// A user as the API shows it (never the password hash).
#[derive(Clone, Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub teams: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub disabled: bool,
    pub has_password: bool,
    pub created_at: Time,
    pub updated_at: Time,
}

impl From<&UserAccount> for UserView {
    fn from(u: &UserAccount) -> Self {
        UserView {
            id: u.id.clone(),
            name: u.name.clone(),
            roles: u.roles.clone(),
            teams: u.teams.clone(),
            department: u.department.clone(),
            language: u.language.clone(),
            email: u.email.clone(),
            disabled: u.disabled,
            has_password: u.password_hash.is_some(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A token as its owner and admins see it (never the secret or its hash).
#[derive(Clone, Debug, Serialize)]
pub struct TokenView {
    pub id: String,
    pub user: String,
    pub name: String,
    pub created_at: Time,
    pub expires_at: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
    pub active: bool,
}

/// A new token: the secret is shown once, here, and never again.
#[derive(Clone, Debug, Serialize)]
pub struct NewToken {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

/// A signed-in browser, as a request sees it.
#[derive(Clone, Debug)]
pub struct SessionView {
    pub actor: Actor,
    pub csrf: String,
    pub language: Option<String>,
}

/// A new session: the cookie value is known only to the browser.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
    pub user: String,
}

struct LiveSession {
    record: SessionRecord,
    created: Timestamp,
    seen: Timestamp,
    written: Timestamp,
}

#[derive(Default)]
struct Memory {
    users: HashMap<String, UserAccount>,
    tokens: HashMap<String, TokenRecord>,
    sessions: HashMap<String, LiveSession>,
}

/// The in-memory side of the accounts (see the module doc).
#[derive(Default)]
pub struct Accounts {
    memory: RwLock<Memory>,
    /// Sign-in attempts per `user:NAME` and `addr:ADDRESS` in the current window.
    failures: Mutex<HashMap<String, Attempts>>,
    /// Held from reading an account to applying the change to memory, so
    /// that concurrent changes (a disable and a rename, a sign-in and a
    /// password reset) apply in one order to the store and to memory.
    changes: Mutex<()>,
    /// Argon2 verifications running now (each takes 19 MiB and ~50 ms):
    /// bounded so a flood of sign-ins cannot exhaust memory.
    hashing: (Mutex<usize>, std::sync::Condvar),
}

#[derive(Clone, Copy)]
struct Attempts {
    count: u32,
    since: Timestamp,
    /// Whether the refusals of this window were written to the audit log.
    audited: bool,
}

/// Argon2 verifications at once.
const HASHING_PERMITS: usize = 2;

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

fn argon2() -> Argon2<'static> {
    // OWASP's minimum for Argon2id: 19 MiB of memory, 2 iterations, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// An Argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    check_password(password)?;
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| AccountError::Invalid(e.to_string()))?;
    argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| AccountError::Invalid(format!("cannot hash the password: {e}")))
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::Invalid(format!("a password needs at least {MIN_PASSWORD_CHARS} characters")));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::Invalid(format!("a password may have at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

fn verify_password(hash: Option<&str>, password: &str) -> bool {
    // Without a hash, verify against a fixed one anyway, so the time taken
    // does not tell whether the user exists.
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1Rr3q9RkEXk1GyrXJZ4/K8qXu2ZzQ0LMa6bG3xUeqjc";
    let parsed = PasswordHash::new(hash.unwrap_or(DUMMY));
    match parsed {
        Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok() && hash.is_some(),
        Err(_) => false,
    }
}

pub fn actor_of(u: &UserAccount) -> Actor {
    Actor { id: u.id.clone(), name: u.name.clone(), roles: u.roles.clone(), teams: u.teams.clone(), email: u.email.clone(), department: u.department.clone() }
}

fn token_view(t: &TokenRecord, now: Timestamp) -> TokenView {
    let active = t.revoked_at.is_none() && t.expires_at.timestamp() > now;
    TokenView {
        id: t.id.clone(),
        user: t.user.clone(),
        name: t.name.clone(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        revoked_at: t.revoked_at,
        active,
    }
}

/// Whether `id` can be a user id: letters, digits, `_`, `-`, `.`, `@`, 1–64 characters.
fn valid_user_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
}

impl Runtime {
    /// Loads users, tokens and sessions from the store into memory (at start).
    pub fn load_accounts(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut m = Memory::default();
        for u in self.store.users()? {
            m.users.insert(u.id.clone(), u);
        }
        for t in self.store.tokens()? {
            m.tokens.insert(t.hash.clone(), t);
        }
        let mut expired = Vec::new();
        for s in self.store.sessions()? {
            let created = s.created_at.timestamp();
            let seen = s.seen_at.timestamp().max(created);
            if now.duration_since(seen) > SESSION_IDLE || now.duration_since(created) > SESSION_ABSOLUTE {
                expired.push(AuthOp::DeleteSession(s.hash));
                continue;
            }
            m.sessions.insert(s.hash.clone(), LiveSession { record: s, created, seen, written: seen });
        }
        if let Ok(mut memory) = self.accounts.memory.write() {
            *memory = m;
        }
        // Sessions that ended while the server was down are forgotten at start.
        if !expired.is_empty() {
            self.store.submit(Job::Auth { ops: expired, audit: Vec::new() })?;
        }
        Ok(())
    }

    fn lock_changes(&self) -> Result<std::sync::MutexGuard<'_, ()>, StoreError> {
        self.accounts.changes.lock().map_err(|_| StoreError::Backend("accounts poisoned".into()))
    }

    fn write_accounts(&self, ops: Vec<AuthOp>, audit: Vec<AuditEntry>) -> Result<(), StoreError> {
        self.store.submit(Job::Auth { ops: ops.clone(), audit })?;
        let mut m = self.accounts.memory.write().map_err(|_| StoreError::Backend("accounts poisoned".into()))?;
        for op in ops {
            match op {
                AuthOp::PutUser(u) => {
                    m.users.insert(u.id.clone(), u);
                }
                AuthOp::PutToken(t) => {
                    m.tokens.insert(t.hash.clone(), t);
                }
                AuthOp::PutSession(s) => {
                    let created = s.created_at.timestamp();
                    let seen = s.seen_at.timestamp().max(created);
                    m.sessions.insert(s.hash.clone(), LiveSession { record: s, created, seen, written: seen });
                }
                AuthOp::DeleteSession(h) => {
                    m.sessions.remove(&h);
                }
                AuthOp::DeleteSessionsOf(user) => m.sessions.retain(|_, s| s.record.user != user),
                AuthOp::TouchSession { .. } => {}
            }
        }
        Ok(())
    }

    fn entry(&self, kind: &str, actor: &str, subject: &str, address: Option<&str>, detail: impl Into<String>) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: self.now(),
            kind: kind.to_string(),
            actor: actor.to_string(),
            subject: subject.to_string(),
            address: address.map(str::to_string),
            detail: detail.into(),
        }
    }

    /// Records a security event on its own (e.g. a refused request).
    pub fn audit_event(&self, kind: &str, actor: &str, subject: &str, address: Option<&str>, detail: &str) {
        let entry = self.entry(kind, actor, subject, address, detail);
        self.store.submit_then(
            Job::Auth { ops: Vec::new(), audit: vec![entry] },
            Box::new(|outcome| {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "could not write an audit entry");
                }
            }),
        );
    }

    /// Records that `actor` was refused `what` (403).
    pub fn audit_denied(&self, actor: &Actor, what: &str) {
        self.audit_event("permission_denied", &actor.id, what, None, "");
    }

    /// The user a bearer token belongs to, if the token is known, not
    /// expired or revoked, and its user is not disabled. Memory only.
    pub fn authenticate(&self, token: &str) -> Option<Actor> {
        let hash = crate::tokens::hash(token);
        let now = self.clock.now();
        let m = self.accounts.memory.read().ok()?;
        let t = m.tokens.get(&hash)?;
        if t.revoked_at.is_some() || t.expires_at.timestamp() <= now {
            return None;
        }
        let user = m.users.get(&t.user).filter(|u| !u.disabled)?;
        Some(actor_of(user))
    }

    /// The user of a session cookie, if it is valid (not idle too long, not
    /// too old, user not disabled). Marks the session as seen.
    pub fn session(&self, cookie: &str) -> Option<SessionView> {
        let hash = crate::tokens::hash(cookie);
        let now = self.clock.now();
        let mut write_seen = None;
        let view = {
            let mut m = self.accounts.memory.write().ok()?;
            let live = m.sessions.get_mut(&hash)?;
            if now.duration_since(live.seen) > SESSION_IDLE || now.duration_since(live.created) > SESSION_ABSOLUTE {
                return None;
            }
            live.seen = now;
            if now.duration_since(live.written) > SEEN_WRITE_EVERY {
                live.written = now;
                live.record.seen_at = Time::from(now);
                write_seen = Some(live.record.clone());
            }
            let (user, csrf) = (live.record.user.clone(), live.record.csrf.clone());
            let account = m.users.get(&user).filter(|u| !u.disabled)?;
            SessionView { actor: actor_of(account), csrf, language: account.language.clone() }
        };
        if let Some(record) = write_seen {
            // Only touches a session the store still has: a sign-out committed
            // meanwhile is never undone.
            let op = AuthOp::TouchSession { hash: record.hash, seen_at: record.seen_at };
            self.store.submit_then(Job::Auth { ops: vec![op], audit: Vec::new() }, Box::new(|_| {}));
        }
        Some(view)
    }

    /// Counts an attempt against every key before the password is checked
    /// (so parallel guesses cannot all pass a check made before any failed),
    /// or refuses it when a key has used up its window: `Err((minutes left,
    /// whether to audit this refusal))`.
    fn reserve_attempt(&self, keys: &[String], now: Timestamp) -> Result<(), (i64, bool)> {
        let Ok(mut failures) = self.accounts.failures.lock() else { return Err((1, false)) };
        if failures.len() > 10_000 {
            failures.retain(|_, a| now.duration_since(a.since) < THROTTLE_WINDOW);
        }
        for k in keys {
            if let Some(a) = failures.get_mut(k)
                && a.count >= THROTTLE_FAILURES
                && now.duration_since(a.since) < THROTTLE_WINDOW
            {
                let minutes = (THROTTLE_WINDOW - now.duration_since(a.since)).as_secs().div_euclid(60) + 1;
                let audit = !a.audited;
                a.audited = true;
                return Err((minutes, audit));
            }
        }
        for k in keys {
            let a = failures.entry(k.clone()).or_insert(Attempts { count: 0, since: now, audited: false });
            if now.duration_since(a.since) >= THROTTLE_WINDOW {
                *a = Attempts { count: 0, since: now, audited: false };
            }
            a.count += 1;
        }
        Ok(())
    }

    /// A successful sign-in gives its attempt back (and clears the user's count).
    fn release_attempt(&self, keys: &[String]) {
        if let Ok(mut failures) = self.accounts.failures.lock() {
            for (i, k) in keys.iter().enumerate() {
                if i == 0 {
                    failures.remove(k);
                } else if let Some(a) = failures.get_mut(k) {
                    a.count = a.count.saturating_sub(1);
                }
            }
        }
    }

    /// Runs an Argon2 verification when a permit is free.
    fn with_hashing_permit<T>(&self, f: impl FnOnce() -> T) -> T {
        let (lock, freed) = &self.accounts.hashing;
        if let Ok(mut busy) = lock.lock() {
            while *busy >= HASHING_PERMITS {
                busy = match freed.wait(busy) {
                    Ok(b) => b,
                    Err(p) => p.into_inner(),
                };
            }
            *busy += 1;
        }
        let out = f();
        if let Ok(mut busy) = lock.lock() {
            *busy = busy.saturating_sub(1);
        }
        freed.notify_one();
        out
    }

    /// Checks a user name and password (blocking: Argon2 takes tens of
    /// milliseconds) and opens a new session. Failures are counted per user
    /// name and per client address; past [`THROTTLE_FAILURES`] in
    /// [`THROTTLE_WINDOW`] every attempt is refused until the window ends.
    pub fn login(&self, username: &str, password: &str, address: Option<&str>) -> Result<NewSession, AccountError> {
        let now = self.clock.now();
        let username = username.trim();
        // What is logged of the name: a user id is at most 64 characters.
        let shown: String = username.chars().take(64).collect();
        let mut keys = vec![format!("user:{}", shown.to_lowercase())];
        if let Some(a) = address {
            keys.push(format!("addr:{a}"));
        }
        if let Err((minutes, audit)) = self.reserve_attempt(&keys, now) {
            if audit {
                self.audit_event("login_failed", &shown, &shown, address, "throttled");
            }
            return Err(AccountError::Throttled { minutes });
        }
        let account = if valid_user_id(username) { self.accounts.memory.read().ok().and_then(|m| m.users.get(username).cloned()) } else { None };
        let verified_hash = account.as_ref().and_then(|u| u.password_hash.clone());
        let ok = password.len() <= MAX_PASSWORD_BYTES && self.with_hashing_permit(|| verify_password(verified_hash.as_deref(), password));
        let fail = |why: &str| {
            self.audit_event("login_failed", &shown, &shown, address, why);
            Err(AccountError::BadCredentials)
        };
        let account = match account {
            Some(a) if ok && !a.disabled => a,
            None => return fail("unknown user"),
            Some(a) if a.disabled => return fail("disabled user"),
            Some(_) => return fail("wrong password"),
        };
        // A new random id at every sign-in: a session id known before it is worthless after.
        let cookie = random_hex(32);
        let csrf = random_hex(32);
        let at = Time::from(now);
        let record = SessionRecord {
            hash: crate::tokens::hash(&cookie),
            user: account.id.clone(),
            created_at: at,
            seen_at: at,
            csrf: csrf.clone(),
            address: address.map(str::to_string),
        };
        {
            // The account may have changed while the password was checked
            // (disabled, a new password): the session is written only if not.
            let _changes = self.accounts.changes.lock().map_err(|_| StoreError::Backend("accounts poisoned".into()))?;
            let current = self.user_account(&account.id);
            if current.as_ref().is_none_or(|u| u.disabled || u.password_hash != verified_hash) {
                return fail("changed during sign-in");
            }
            let audit = self.entry("login", &account.id, &account.id, address, "");
            self.write_accounts(vec![AuthOp::PutSession(record)], vec![audit])?;
        }
        self.release_attempt(&keys);
        Ok(NewSession { cookie, csrf, user: account.id })
    }

    /// Ends one session (sign out).
    pub fn logout(&self, cookie: &str, address: Option<&str>) -> Result<(), AccountError> {
        let _changes = self.lock_changes()?;
        let hash = crate::tokens::hash(cookie);
        let user = self.accounts.memory.read().ok().and_then(|m| m.sessions.get(&hash).map(|s| s.record.user.clone()));
        let audit = user.iter().map(|u| self.entry("logout", u, u, address, "")).collect();
        self.write_accounts(vec![AuthOp::DeleteSession(hash)], audit)?;
        Ok(())
    }

    /// Ends every session of `user` ("sign out everywhere").
    pub fn end_sessions(&self, user: &str, by: &str, address: Option<&str>) -> Result<(), AccountError> {
        let _changes = self.lock_changes()?;
        let audit = self.entry("sessions_ended", by, user, address, "");
        self.write_accounts(vec![AuthOp::DeleteSessionsOf(user.to_string())], vec![audit])?;
        Ok(())
    }

    /// Checks roles and teams against the current bundle.
    fn check_roles_and_teams(&self, roles: &[String], teams: &[String]) -> Result<(), AccountError> {
        let bundle = self.bundle();
        for r in roles {
            if r != "admin" && !bundle.model.roles.contains_key(r) {
                let known: Vec<&str> = bundle.model.roles.keys().map(String::as_str).collect();
                return Err(AccountError::Invalid(format!("role `{r}` is not declared in the definitions (roles: {})", known.join(", "))));
            }
        }
        let known: Vec<String> = self.teams(&bundle).into_iter().map(|(name, _)| name).collect();
        for t in teams {
            if !known.contains(t) {
                return Err(AccountError::Invalid(format!("team `{t}` is not a team of the definitions or a team record (teams: {})", known.join(", "))));
            }
        }
        Ok(())
    }

    fn check_language(language: &Option<String>) -> Result<(), AccountError> {
        match language.as_deref() {
            None | Some("zh-CN") | Some("en") => Ok(()),
            Some(other) => Err(AccountError::Invalid(format!("language must be zh-CN or en, not `{other}`"))),
        }
    }

    pub fn users(&self) -> Vec<UserView> {
        let mut out: Vec<UserView> = self.accounts.memory.read().map(|m| m.users.values().map(UserView::from).collect()).unwrap_or_default();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Every user who is not disabled, as actors (notification recipients).
    pub fn actors(&self) -> Vec<Actor> {
        let mut out: Vec<Actor> = self.accounts.memory.read().map(|m| m.users.values().filter(|u| !u.disabled).map(actor_of).collect()).unwrap_or_default();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The display name of a user id (the id itself when unknown).
    pub fn display_name(&self, id: &str) -> String {
        self.accounts.memory.read().ok().and_then(|m| m.users.get(id).map(|u| u.name.clone())).unwrap_or_else(|| id.to_string())
    }

    pub fn user_account(&self, id: &str) -> Option<UserAccount> {
        self.accounts.memory.read().ok().and_then(|m| m.users.get(id).cloned())
    }

    /// Creates a user (blocking when a password is given: it is hashed).
    pub fn create_user(&self, new: NewUser, by: &str) -> Result<UserView, AccountError> {
        let _changes = self.lock_changes()?;
        if !valid_user_id(&new.id) {
            return Err(AccountError::Invalid(format!("`{}` cannot be a user id: use 1 to 64 letters, digits, `_`, `-`, `.` or `@`", new.id)));
        }
        if self.user_account(&new.id).is_some() {
            return Err(AccountError::UserExists(new.id));
        }
        self.check_roles_and_teams(&new.roles, &new.teams)?;
        Self::check_language(&new.language)?;
        let password_hash = new.password.as_deref().map(hash_password).transpose()?;
        let now = self.now();
        let user = UserAccount {
            name: new.name.unwrap_or_else(|| new.id.clone()),
            id: new.id,
            roles: new.roles,
            teams: new.teams,
            department: new.department,
            language: new.language,
            email: new.email,
            disabled: false,
            password_hash,
            created_at: now,
            updated_at: now,
        };
        let audit = self.entry("user_created", by, &user.id, None, format!("roles {}", user.roles.join(",")));
        self.write_accounts(vec![AuthOp::PutUser(user.clone())], vec![audit])?;
        Ok(UserView::from(&user))
    }

    /// Changes a user; disabling one also ends their sessions.
    pub fn update_user(&self, id: &str, change: UserChange, by: &str) -> Result<UserView, AccountError> {
        let _changes = self.lock_changes()?;
        let mut user = self.user_account(id).ok_or_else(|| AccountError::NoUser(id.to_string()))?;
        let roles = change.roles.clone().unwrap_or_else(|| user.roles.clone());
        let teams = change.teams.clone().unwrap_or_else(|| user.teams.clone());
        self.check_roles_and_teams(&roles, &teams)?;
        Self::check_language(&change.language)?;
        let mut what = Vec::new();
        if roles != user.roles {
            what.push(format!("roles {} → {}", user.roles.join(","), roles.join(",")));
        }
        if teams != user.teams {
            what.push(format!("teams {} → {}", user.teams.join(","), teams.join(",")));
        }
        user.roles = roles;
        user.teams = teams;
        if let Some(n) = change.name {
            user.name = n;
        }
        if change.department.is_some() {
            user.department = change.department.filter(|d| !d.is_empty());
        }
        if change.language.is_some() {
            user.language = change.language;
        }
        if change.email.is_some() {
            user.email = change.email.filter(|e| !e.is_empty());
        }
        let mut ops = Vec::new();
        let mut kind = "user_changed";
        if let Some(disabled) = change.disabled
            && disabled != user.disabled
        {
            user.disabled = disabled;
            if disabled {
                kind = "user_disabled";
                ops.push(AuthOp::DeleteSessionsOf(user.id.clone()));
            } else {
                what.push("enabled".into());
            }
        }
        user.updated_at = self.now();
        ops.insert(0, AuthOp::PutUser(user.clone()));
        let audit = self.entry(kind, by, &user.id, None, what.join("; "));
        self.write_accounts(ops, vec![audit])?;
        Ok(UserView::from(&user))
    }

    /// Sets a user's password (blocking: it is hashed) and ends their other sessions.
    pub fn set_password(&self, id: &str, password: &str, by: &str) -> Result<(), AccountError> {
        let _changes = self.lock_changes()?;
        let mut user = self.user_account(id).ok_or_else(|| AccountError::NoUser(id.to_string()))?;
        user.password_hash = Some(hash_password(password)?);
        user.updated_at = self.now();
        // A new password ends every way in that the old one could have made:
        // the user's sessions and API tokens.
        let now = self.now();
        let mut ops = vec![AuthOp::PutUser(user), AuthOp::DeleteSessionsOf(id.to_string())];
        let tokens: Vec<TokenRecord> =
            self.accounts.memory.read().map(|m| m.tokens.values().filter(|t| t.user == id && t.revoked_at.is_none()).cloned().collect()).unwrap_or_default();
        for mut t in tokens {
            t.revoked_at = Some(now);
            ops.push(AuthOp::PutToken(t));
        }
        let audit = self.entry("password_changed", by, id, None, "sessions ended, tokens revoked");
        self.write_accounts(ops, vec![audit])?;
        Ok(())
    }

    /// A new API token for `user`, valid `days` days (default 90).
    pub fn create_token(&self, user: &str, name: &str, days: Option<i64>, by: &str) -> Result<NewToken, AccountError> {
        let _changes = self.lock_changes()?;
        let account = self.user_account(user).ok_or_else(|| AccountError::NoUser(user.to_string()))?;
        if account.disabled {
            return Err(AccountError::Invalid(format!("user `{user}` is disabled")));
        }
        let days = days.unwrap_or(TOKEN_DEFAULT_DAYS);
        if !(1..=TOKEN_MAX_DAYS).contains(&days) {
            return Err(AccountError::Invalid(format!("a token lasts 1 to {TOKEN_MAX_DAYS} days, not {days}")));
        }
        let name = name.trim();
        if name.chars().count() > 100 {
            return Err(AccountError::Invalid("a token's name may have at most 100 characters".into()));
        }
        let now = self.clock.now();
        let expires = now.checked_add(SignedDuration::from_hours(days * 24)).map_err(|e| AccountError::Invalid(e.to_string()))?;
        let secret = crate::tokens::generate();
        let record = TokenRecord {
            id: format!("tok_{}", random_hex(8)),
            hash: crate::tokens::hash(&secret),
            user: user.to_string(),
            name: if name.is_empty() { "API".to_string() } else { name.to_string() },
            created_at: Time::from(now),
            expires_at: Time::from(expires),
            revoked_at: None,
        };
        let audit = self.entry("token_created", by, &record.id, None, format!("for {user}, expires {}", record.expires_at));
        self.write_accounts(vec![AuthOp::PutToken(record.clone())], vec![audit])?;
        Ok(NewToken { view: token_view(&record, now), token: secret })
    }

    /// Tokens of one user, or of everyone (`None`), newest first.
    pub fn tokens(&self, user: Option<&str>) -> Vec<TokenView> {
        let now = self.clock.now();
        let mut out: Vec<TokenView> = self
            .accounts
            .memory
            .read()
            .map(|m| m.tokens.values().filter(|t| user.is_none_or(|u| t.user == u)).map(|t| token_view(t, now)).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        out
    }

    /// Revokes a token by its id. `owner`: only that user's tokens (not an admin).
    pub fn revoke_token(&self, id: &str, owner: Option<&str>, by: &str) -> Result<TokenView, AccountError> {
        let _changes = self.lock_changes()?;
        let found = self.accounts.memory.read().ok().and_then(|m| m.tokens.values().find(|t| t.id == id).cloned());
        let mut token = found.filter(|t| owner.is_none_or(|o| t.user == o)).ok_or_else(|| AccountError::NoToken(id.to_string()))?;
        let now = self.clock.now();
        if token.revoked_at.is_none() {
            token.revoked_at = Some(Time::from(now));
            let audit = self.entry("token_revoked", by, id, None, format!("of {}", token.user));
            self.write_accounts(vec![AuthOp::PutToken(token.clone())], vec![audit])?;
        }
        Ok(token_view(&token, now))
    }

    /// Imports users and token hashes of an old `auth.redb` (kept before
    /// accounts moved into the main store). Old tokens get the default
    /// lifetime from now; users without a password keep signing in with tokens.
    pub fn import_legacy_accounts(&self, legacy: &flowform_store::LegacyAuth) -> Result<usize, AccountError> {
        let _changes = self.lock_changes()?;
        let now = self.clock.now();
        let at = Time::from(now);
        let expires = now.checked_add(SignedDuration::from_hours(TOKEN_DEFAULT_DAYS * 24)).map_err(|e| AccountError::Invalid(e.to_string()))?;
        let mut ops = Vec::new();
        for a in &legacy.users {
            if self.user_account(&a.id).is_none() {
                ops.push(AuthOp::PutUser(UserAccount {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    roles: a.roles.clone(),
                    teams: a.teams.clone(),
                    email: a.email.clone(),
                    created_at: at,
                    updated_at: at,
                    ..UserAccount::default()
                }));
            }
        }
        for (hash, user) in &legacy.tokens {
            ops.push(AuthOp::PutToken(TokenRecord {
                id: format!("tok_{}", random_hex(8)),
                hash: hash.clone(),
                user: user.clone(),
                name: "imported".into(),
                created_at: at,
                expires_at: Time::from(expires),
                revoked_at: None,
            }));
        }
        let n = ops.len();
        if n > 0 {
            let audit =
                self.entry("user_changed", "system", "auth.redb", None, format!("imported {} users and {} tokens", legacy.users.len(), legacy.tokens.len()));
            self.write_accounts(ops, vec![audit])?;
        }
        Ok(n)
    }

    /// Adds a user as it is (demo data, imports), with an audit entry.
    pub fn import_user(&self, user: UserAccount) -> Result<(), StoreError> {
        let _changes = self.lock_changes()?;
        let audit = self.entry("user_created", "import", &user.id, None, format!("roles {}", user.roles.join(",")));
        self.write_accounts(vec![AuthOp::PutUser(user)], vec![audit])
    }

    /// Security events, newest first.
    pub fn audit_log(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.audit(before, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_only_against_its_own_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password(Some(&h), "correct horse"));
        assert!(!verify_password(Some(&h), "correct hors"));
        assert!(!verify_password(None, "correct horse"));
        assert!(hash_password("short").is_err());
    }
}
