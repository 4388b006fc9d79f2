//! Users and what each may do: client authentication and authorization for REST and the
//! Redis protocol (README, "Security").
//!
//! A user has a password, API tokens, or both, each stored only as a salted argon2id hash,
//! and grants of verbs (`read`, `write`, `admin`) on keyspaces (a name, `prefix*`, or `*`).
//! Users are cluster metadata, spread as keyspace definitions are ([`crate::keyspaces`]):
//! stored in each node's engine, versioned, pushed to every member on a change and pulled
//! from a random peer every second, so a user made on one node can log in on any. A removed
//! user stays as a versioned tombstone, so the removal spreads and no stale copy revives it.
//!
//! Hashing is slow on purpose (tens of milliseconds), so a credential once verified is
//! remembered in memory, by a SHA-256 of it, for as long as the user is unchanged: a client
//! that sends Basic credentials with every REST request pays the hash once.

use crate::node::Node;
use crate::peers::PeerRequest;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use parking_lot::{Mutex, RwLock};
use ringkv_replica::{LocalStore, ReplicaError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const META_PREFIX: &str = "user/";

/// Longest user name.
pub const USER_NAME_BYTES_MAX: usize = 64;

/// Shortest password a user may be given.
pub const PASSWORD_BYTES_MIN: usize = 8;

/// Longest password or token accepted (longer ones are refused before any hashing).
pub const SECRET_BYTES_MAX: usize = 1024;

/// Most grants and tokens one user may hold.
const GRANTS_MAX: usize = 64;
const TOKENS_MAX: usize = 16;

/// Credentials remembered as verified; past this the memory is cleared.
const VERIFIED_MAX: usize = 4096;

/// Tokens start with this, so they are told from passwords and found by secret scanners.
const TOKEN_PREFIX: &str = "rk1.";

/// What a grant allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verbs(u8);

impl Verbs {
    /// Reading keys and listing them.
    pub const READ: Verbs = Verbs(1);
    /// Writing and deleting keys.
    pub const WRITE: Verbs = Verbs(2);
    /// Defining keyspaces, flushing them, cluster operations (on `*`), managing users.
    pub const ADMIN: Verbs = Verbs(4);
    /// Reading and writing.
    pub const ALL_DATA: Verbs = Verbs(3);
    /// Every verb.
    pub const ALL: Verbs = Verbs(7);

    /// Whether every verb of `other` is in `self`.
    pub fn contains(self, other: Verbs) -> bool {
        self.0 & other.0 == other.0
    }

    fn union(self, other: Verbs) -> Verbs {
        Verbs(self.0 | other.0)
    }

    fn names(self) -> Vec<&'static str> {
        [
            (Self::READ, "read"),
            (Self::WRITE, "write"),
            (Self::ADMIN, "admin"),
        ]
        .into_iter()
        .filter(|(verb, _)| self.contains(*verb))
        .map(|(_, name)| name)
        .collect()
    }
}

/// Verbs on the keyspaces a pattern matches: written `read,write@default`, `admin@*`,
/// `all@logs*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// A keyspace name, a prefix ending in `*`, or `*` for every keyspace.
    pub keyspace: String,
    /// What the grant allows there.
    pub verbs: Verbs,
}

impl Grant {
    /// Whether the grant covers `scope`.
    fn covers(&self, scope: Scope<'_>) -> bool {
        match scope {
            Scope::Cluster => self.keyspace == "*",
            Scope::Keyspace(name) => match self.keyspace.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => self.keyspace == name,
            },
        }
    }
}

impl std::str::FromStr for Grant {
    type Err = UserError;

    fn from_str(text: &str) -> Result<Self, UserError> {
        let invalid = |why: &str| {
            UserError::Invalid(format!(
                "grant {text:?}: {why} (write VERBS@KEYSPACE: read,write@default, admin@*, all@logs*)"
            ))
        };
        let (verbs, keyspace) = text.split_once('@').ok_or_else(|| invalid("no @"))?;
        let mut all = Verbs::default();
        for verb in verbs.split(',') {
            all = all.union(match verb.trim() {
                "read" => Verbs::READ,
                "write" => Verbs::WRITE,
                "admin" => Verbs::ADMIN,
                "all" => Verbs::ALL,
                _ => return Err(invalid("verbs are read, write, admin or all")),
            });
        }
        let name = keyspace.strip_suffix('*').unwrap_or(keyspace);
        let name_ok = name.is_empty() && keyspace == "*"
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if keyspace.is_empty() || !name_ok || name.len() > USER_NAME_BYTES_MAX {
            return Err(invalid(
                "the keyspace is a name, a prefix ending in *, or *",
            ));
        }
        Ok(Grant {
            keyspace: keyspace.to_owned(),
            verbs: all,
        })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.verbs.names().join(","), self.keyspace)
    }
}

impl Serialize for Grant {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a verb is asked for.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// One keyspace.
    Keyspace(&'a str),
    /// The whole cluster (membership, repair, users): only grants on `*` cover it.
    Cluster,
}

/// One user, as stored and spread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDef {
    /// The name clients log in with.
    pub name: String,
    /// The argon2id hash of the password (PHC string), if the user has one.
    pub password: Option<String>,
    /// The argon2id hashes of the user's API tokens.
    pub tokens: Vec<String>,
    /// What the user may do.
    pub grants: Vec<Grant>,
    /// Bumped on every change, so the newest definition wins when nodes compare.
    pub version: u64,
    /// A removed user: kept so the removal spreads.
    pub removed: bool,
}

impl UserDef {
    /// The verbs the user's grants allow in `scope` (none for a removed user).
    pub fn verbs(&self, scope: Scope<'_>) -> Verbs {
        if self.removed {
            return Verbs::default();
        }
        self.grants
            .iter()
            .filter(|grant| grant.covers(scope))
            .fold(Verbs::default(), |held, grant| held.union(grant.verbs))
    }

    /// Whether the user's grants allow `verbs` in `scope`.
    pub fn may(&self, verbs: Verbs, scope: Scope<'_>) -> bool {
        self.verbs(scope).contains(verbs)
    }
}

/// What `GET /v1/users` shows of a user: never a hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserView {
    /// The name.
    pub name: String,
    /// Whether the user has a password.
    pub password: bool,
    /// How many API tokens the user has.
    pub tokens: usize,
    /// What the user may do.
    pub grants: Vec<Grant>,
    /// A token made by this request: shown once, never stored in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_token: Option<String>,
}

/// The body of `PUT /v1/users/{name}`: creates the user, or changes what is given.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    /// A new password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Make a new API token and answer with it.
    #[serde(default)]
    pub new_token: bool,
    /// Revoke every token the user has (before making a new one, if asked).
    #[serde(default)]
    pub revoke_tokens: bool,
    /// The user's grants, replacing the old ones; unchanged when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<Grant>>,
}

/// Why a user could not be changed, or a client not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The name, password or grants are invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such user.
    #[error("no user named {0}")]
    NotFound(String),
    /// The credentials do not match any user.
    #[error("invalid username-password pair or user is disabled")]
    WrongCredentials,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ReplicaError),
}

/// A secret a client presents.
#[derive(Clone, Copy, Debug)]
pub enum Credential<'a> {
    /// A user name and password (REST Basic, Redis `AUTH user pass`).
    Password { user: &'a str, password: &'a [u8] },
    /// An API token (REST `Bearer`, or a password that is a token).
    Token(&'a str),
}

/// The users a node knows, and the credentials it has verified.
pub struct Users {
    defined: RwLock<BTreeMap<String, UserDef>>,
    /// Bumped on every change, so connections may keep what they looked up until then.
    generation: AtomicU64,
    /// SHA-256 of verified credentials → the user and its version when verified.
    verified: Mutex<HashMap<[u8; 32], (String, u64)>>,
}

impl Users {
    /// Loads the stored users.
    pub fn load(store: &LocalStore) -> Result<Self, ReplicaError> {
        let mut defined = BTreeMap::new();
        for (_, bytes) in store.meta_scan(META_PREFIX)? {
            match serde_json::from_slice::<UserDef>(&bytes) {
                Ok(user) => {
                    defined.insert(user.name.clone(), user);
                }
                Err(error) => tracing::error!(%error, "ignoring an unreadable user"),
            }
        }
        Ok(Self {
            defined: RwLock::new(defined),
            generation: AtomicU64::new(1),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Changes with every change of any user.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether any user exists (then clients must log in; see [`crate::users`]).
    pub fn any(&self) -> bool {
        self.defined.read().values().any(|user| !user.removed)
    }

    /// The user named `name`, unless removed.
    pub fn get(&self, name: &str) -> Option<UserDef> {
        self.defined
            .read()
            .get(name)
            .filter(|user| !user.removed)
            .cloned()
    }

    /// Every user, removed ones included (for spreading).
    pub fn all(&self) -> Vec<UserDef> {
        self.defined.read().values().cloned().collect()
    }

    /// Every user, as shown to operators.
    pub fn list(&self) -> Vec<UserView> {
        self.defined
            .read()
            .values()
            .filter(|user| !user.removed)
            .map(|user| view(user, None))
            .collect()
    }

    /// Creates user `name` or changes it as `request` says; answers with the user as shown,
    /// with the new token if one was asked for.
    pub fn put(
        &self,
        store: &LocalStore,
        name: &str,
        request: UserRequest,
    ) -> Result<(UserDef, UserView), UserError> {
        validate_name(name)?;
        if let Some(password) = &request.password {
            if password.len() < PASSWORD_BYTES_MIN || password.len() > SECRET_BYTES_MAX {
                return Err(UserError::Invalid(format!(
                    "a password has {PASSWORD_BYTES_MIN} to {SECRET_BYTES_MAX} bytes"
                )));
            }
        }
        if request
            .grants
            .as_ref()
            .is_some_and(|g| g.len() > GRANTS_MAX)
        {
            return Err(UserError::Invalid(format!("at most {GRANTS_MAX} grants")));
        }
        // Hash outside the lock: it takes tens of milliseconds.
        let password = request.password.as_deref().map(hash).transpose()?;
        let token = request.new_token.then(|| new_token(name));
        let token_hash = token
            .as_deref()
            .map(|t| hash(token_secret(t)))
            .transpose()?;

        let mut defined = self.defined.write();
        let held = defined.get(name).filter(|user| !user.removed);
        let mut user = match held {
            Some(held) => held.clone(),
            None => UserDef {
                name: name.to_owned(),
                password: None,
                tokens: Vec::new(),
                grants: Vec::new(),
                version: 0,
                removed: false,
            },
        };
        user.version = defined.get(name).map_or(1, |old| old.version + 1);
        if let Some(password) = password {
            user.password = Some(password);
        }
        if request.revoke_tokens {
            user.tokens.clear();
        }
        if let Some(token_hash) = token_hash {
            if user.tokens.len() >= TOKENS_MAX {
                return Err(UserError::Invalid(format!(
                    "user {name} has {TOKENS_MAX} tokens, the most; revoke them first"
                )));
            }
            user.tokens.push(token_hash);
        }
        if let Some(grants) = request.grants {
            user.grants = grants;
        }
        if user.password.is_none() && user.tokens.is_empty() {
            return Err(UserError::Invalid(format!(
                "user {name} needs a password or a token to log in with"
            )));
        }
        self.save(store, &mut defined, user.clone())?;
        let shown = view(&user, token);
        Ok((user, shown))
    }

    /// Removes user `name`; returns the tombstone to spread.
    pub fn remove(&self, store: &LocalStore, name: &str) -> Result<UserDef, UserError> {
        let mut defined = self.defined.write();
        let Some(held) = defined.get(name).filter(|user| !user.removed) else {
            return Err(UserError::NotFound(name.to_owned()));
        };
        let tombstone = UserDef {
            name: name.to_owned(),
            password: None,
            tokens: Vec::new(),
            grants: Vec::new(),
            version: held.version + 1,
            removed: true,
        };
        self.save(store, &mut defined, tombstone.clone())?;
        Ok(tombstone)
    }

    /// Takes a user heard from another node if it is newer than the one held (on equal
    /// versions the greater encoding wins, so every node picks the same). Returns whether
    /// it was taken.
    pub fn adopt(&self, store: &LocalStore, user: UserDef) -> Result<bool, UserError> {
        validate_name(&user.name)?;
        if user.grants.len() > GRANTS_MAX || user.tokens.len() > TOKENS_MAX {
            return Err(UserError::Invalid("too many grants or tokens".into()));
        }
        let mut defined = self.defined.write();
        let newer = defined.get(&user.name).is_none_or(|held| {
            let encoded = |u: &UserDef| serde_json::to_vec(u).unwrap_or_default();
            (user.version, encoded(&user)) > (held.version, encoded(held))
        });
        if !newer {
            return Ok(false);
        }
        self.save(store, &mut defined, user)?;
        Ok(true)
    }

    fn save(
        &self,
        store: &LocalStore,
        defined: &mut BTreeMap<String, UserDef>,
        user: UserDef,
    ) -> Result<(), UserError> {
        let bytes = serde_json::to_vec(&user).expect("a user always serializes");
        store.meta_put(&format!("{META_PREFIX}{}", user.name), &bytes)?;
        defined.insert(user.name.clone(), user);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The user a credential belongs to, if it was verified before and the user has not
    /// changed since: no hashing.
    pub fn verified(&self, credential: Credential<'_>) -> Option<String> {
        let digest = digest(credential);
        let (name, version) = self.verified.lock().get(&digest).cloned()?;
        let current = self
            .defined
            .read()
            .get(&name)
            .map(|u| (u.version, u.removed));
        (current == Some((version, false))).then_some(name)
    }

    /// Checks a credential against the stored hashes (slow: run it off the event loops, as
    /// [`authenticate`] does); remembers it when it matches.
    pub fn verify(&self, credential: Credential<'_>) -> Result<String, UserError> {
        let (name, secret) = match credential {
            Credential::Password { user, password } => (user.to_owned(), password),
            Credential::Token(token) => (token_user(token)?, token_secret(token).as_bytes()),
        };
        if secret.len() > SECRET_BYTES_MAX {
            return Err(UserError::WrongCredentials);
        }
        let user = self.get(&name);
        let hashes: Vec<&String> = match (&user, credential) {
            (Some(user), Credential::Password { .. }) => user.password.iter().collect(),
            (Some(user), Credential::Token(_)) => user.tokens.iter().collect(),
            (None, _) => Vec::new(),
        };
        let matched = hashes.iter().any(|stored| matches(stored, secret));
        if hashes.is_empty() {
            // As slow as a real check, so timing does not tell which users exist.
            matches(dummy_hash(), secret);
        }
        let user = user
            .filter(|_| matched)
            .ok_or(UserError::WrongCredentials)?;
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(digest(credential), (user.name.clone(), user.version));
        Ok(user.name)
    }
}

/// Why a login failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginRefused {
    /// Too many failures from the client's address: not checked; retry after this long.
    Throttled(std::time::Duration),
    /// The credential matches no user, or not the one asked for.
    Wrong,
}

/// Logs a client at `peer` in through `api` with `credential`, returning the user's name. A
/// credential verified before passes at once, however many guesses were made from the same
/// address (a client behind the same NAT as a guesser keeps working); any other is refused
/// unchecked while the address is throttled, else checked by its hash off the event loop.
/// `accept` may refuse the user a credential names (`AUTH user token` must name the token's
/// user). Outcomes are counted in `ringkv_auth_logins`.
pub async fn log_in(
    node: &Arc<Node>,
    api: Api,
    peer: Option<std::net::IpAddr>,
    credential: Credential<'_>,
    accept: impl Fn(&str) -> bool,
) -> Result<String, LoginRefused> {
    if let Some(name) = node.users.verified(credential).filter(|name| accept(name)) {
        return Ok(name);
    }
    node.logins
        .admit(api, peer)
        .map_err(LoginRefused::Throttled)?;
    let checked = authenticate(node, credential)
        .await
        .ok()
        .filter(|name| accept(name));
    node.logins.record(api, peer, checked.is_some());
    checked.ok_or(LoginRefused::Wrong)
}

/// Authenticates `credential` against `node`'s users: from memory when it was verified
/// before, else by its hash on a blocking thread. Returns the user's name.
async fn authenticate(node: &Arc<Node>, credential: Credential<'_>) -> Result<String, UserError> {
    if let Some(name) = node.users.verified(credential) {
        return Ok(name);
    }
    let owned = OwnedCredential::from(credential);
    let node = Arc::clone(node);
    tokio::task::spawn_blocking(move || node.users.verify(owned.borrow()))
        .await
        .map_err(|_| UserError::WrongCredentials)?
}

/// Creates or changes user `name` on `node` (hashing on a blocking thread) and tells every
/// member.
pub async fn put(
    node: &Arc<Node>,
    name: &str,
    request: UserRequest,
) -> Result<UserView, UserError> {
    let (keeper, name) = (Arc::clone(node), name.to_owned());
    let (user, shown) =
        tokio::task::spawn_blocking(move || keeper.users.put(&keeper.store, &name, request))
            .await
            .map_err(|error| UserError::Invalid(format!("hashing failed: {error}")))??;
    crate::keyspaces::announce_metadata(node, || PeerRequest::DefineUser(user.clone()));
    Ok(shown)
}

/// Removes user `name` on `node` and tells every member.
pub fn remove(node: &Arc<Node>, name: &str) -> Result<(), UserError> {
    let tombstone = node.users.remove(&node.store, name)?;
    crate::keyspaces::announce_metadata(node, || PeerRequest::DefineUser(tombstone.clone()));
    Ok(())
}

/// A [`Credential`] that can cross to another thread.
enum OwnedCredential {
    Password { user: String, password: Vec<u8> },
    Token(String),
}

impl From<Credential<'_>> for OwnedCredential {
    fn from(credential: Credential<'_>) -> Self {
        match credential {
            Credential::Password { user, password } => OwnedCredential::Password {
                user: user.to_owned(),
                password: password.to_vec(),
            },
            Credential::Token(token) => OwnedCredential::Token(token.to_owned()),
        }
    }
}

impl OwnedCredential {
    fn borrow(&self) -> Credential<'_> {
        match self {
            OwnedCredential::Password { user, password } => Credential::Password { user, password },
            OwnedCredential::Token(token) => Credential::Token(token),
        }
    }
}

/// Whether `text` has the form of an API token (so `AUTH <token>` can take one).
pub fn is_token(text: &[u8]) -> bool {
    text.starts_with(TOKEN_PREFIX.as_bytes())
}

fn validate_name(name: &str) -> Result<(), UserError> {
    let valid = !name.is_empty()
        && name.len() <= USER_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(UserError::Invalid(format!(
            "a user name has 1 to {USER_NAME_BYTES_MAX} of A-Z a-z 0-9 _ . -"
        )))
    }
}

fn view(user: &UserDef, new_token: Option<String>) -> UserView {
    UserView {
        name: user.name.clone(),
        password: user.password.is_some(),
        tokens: user.tokens.len(),
        grants: user.grants.clone(),
        new_token,
    }
}

/// A salted argon2id hash of `secret` (the crate's default parameters, OWASP's minimum).
fn hash(secret: impl AsRef<[u8]>) -> Result<String, UserError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|error| UserError::Invalid(error.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_ref(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| UserError::Invalid(error.to_string()))
}

/// Whether `secret` matches the PHC hash `stored` (an unreadable hash matches nothing).
fn matches(stored: &str, secret: &[u8]) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|hash| Argon2::default().verify_password(secret, &hash).is_ok())
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(rand::random::<[u8; 16]>()).expect("hashing random bytes works"))
}

/// A new token for `user`: `rk1.<user, base64url>.<32 random bytes, base64url>`.
fn new_token(user: &str) -> String {
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!(
        "{TOKEN_PREFIX}{}.{}",
        encode(user.as_bytes()),
        encode(&rand::random::<[u8; 32]>())
    )
}

/// The user a token names.
fn token_user(token: &str) -> Result<String, UserError> {
    let encoded = token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .map(|(user, _)| user)
        .ok_or(UserError::WrongCredentials)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(UserError::WrongCredentials)
}

/// The secret part of a token (what is hashed).
fn token_secret(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(_, secret)| secret)
}

fn digest(credential: Credential<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    match credential {
        Credential::Password { user, password } => {
            hasher.update(b"p");
            hasher.update((user.len() as u64).to_le_bytes());
            hasher.update(user.as_bytes());
            hasher.update(password);
        }
        Credential::Token(token) => {
            hasher.update(b"t");
            hasher.update(token.as_bytes());
        }
    }
    hasher.finalize().into()
}

/// Who a client acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Not logged in, and no default applies: may only log in.
    Anonymous,
    /// Every verb everywhere: a loopback client of a node without users, or a Redis client
    /// that gave `resp_password`.
    Superuser,
    /// A user, by name (its grants are looked up as they are now, so a change applies at once).
    User(String),
}

/// Which client API a principal is sought for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// REST.
    Rest,
    /// The Redis protocol.
    Resp,
}

impl Api {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Api::Rest => "rest",
            Api::Resp => "resp",
        }
    }
}

impl Principal {
    /// Who a client that has not logged in acts as, connecting from `peer` (`None`: an
    /// in-process caller, as tests are):
    /// - the configured `default_user`, if that user exists;
    /// - else, on a node without users, a superuser if the client is on loopback, or the
    ///   node runs with `protected_mode = false` (Redis's protected mode: a node without
    ///   credentials serves only its own machine), and for the Redis protocol only when no
    ///   `resp_password` is set;
    /// - else no one: the client must log in.
    pub fn default_for(node: &Node, peer: Option<std::net::IpAddr>, api: Api) -> Principal {
        let config = &node.config;
        if let Some(name) = &config.default_user {
            if node.users.get(name).is_some() {
                return Principal::User(name.clone());
            }
        }
        let local = peer.is_none_or(|ip| ip.is_loopback()) || !config.protected_mode;
        let password_set = api == Api::Resp && config.resp_password.is_some();
        if local && !password_set && !node.users.any() {
            Principal::Superuser
        } else {
            Principal::Anonymous
        }
    }

    /// The verbs this principal holds in `scope`.
    pub fn verbs(&self, users: &Users, scope: Scope<'_>) -> Verbs {
        match self {
            Principal::Anonymous => Verbs::default(),
            Principal::Superuser => Verbs::ALL,
            Principal::User(name) => users
                .defined
                .read()
                .get(name)
                .map_or(Verbs::default(), |user| user.verbs(scope)),
        }
    }

    /// Whether this principal may do `verbs` in `scope`.
    pub fn may(&self, users: &Users, verbs: Verbs, scope: Scope<'_>) -> bool {
        self.verbs(users, scope).contains(verbs)
    }

    /// The name errors and logs show.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "(none)",
            Principal::Superuser => "default",
            Principal::User(name) => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_print_and_cover_what_they_name() {
        let grant: Grant = "read,write@logs*".parse().unwrap();
        assert_eq!(grant.to_string(), "read,write@logs*");
        assert!(grant.covers(Scope::Keyspace("logs2")));
        assert!(!grant.covers(Scope::Keyspace("default")));
        assert!(!grant.covers(Scope::Cluster), "only * covers the cluster");
        let all: Grant = "all@*".parse().unwrap();
        assert!(all.covers(Scope::Cluster) && all.verbs.contains(Verbs::ADMIN));
        for bad in ["read", "fly@default", "read@", "read@a/b", "read@*x*"] {
            assert!(bad.parse::<Grant>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn a_user_may_only_what_its_grants_allow() {
        let user = UserDef {
            name: "app".into(),
            password: None,
            tokens: Vec::new(),
            grants: vec!["read@*".parse().unwrap(), "write@app".parse().unwrap()],
            version: 1,
            removed: false,
        };
        assert!(user.may(Verbs::READ, Scope::Keyspace("other")));
        assert!(user.may(Verbs::WRITE, Scope::Keyspace("app")));
        assert!(!user.may(Verbs::WRITE, Scope::Keyspace("other")));
        assert!(!user.may(Verbs::ADMIN, Scope::Keyspace("app")));
        assert!(!user.may(Verbs::ADMIN, Scope::Cluster));
        let removed = UserDef {
            removed: true,
            ..user
        };
        assert!(!removed.may(Verbs::READ, Scope::Keyspace("app")));
    }

    #[test]
    fn tokens_name_their_user_and_hashes_verify_only_their_secret() {
        let token = new_token("alice.b");
        assert!(is_token(token.as_bytes()));
        assert_eq!(token_user(&token).unwrap(), "alice.b");
        let stored = hash(token_secret(&token)).unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(matches(&stored, token_secret(&token).as_bytes()));
        assert!(!matches(&stored, b"guess"));
        assert_ne!(hash("same").unwrap(), hash("same").unwrap(), "salted");
    }
}
