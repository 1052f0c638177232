//! Authentication: bearer tokens checked against their stored hashes, the principal a request
//! acts as, and the admin token created on first start.
//!
//! A token's secret is 32 random bytes (base64url) behind the `blst_` prefix; the store keeps only
//! its SHA-256. Lookups are cached for [`CACHE_TTL`] so a request costs one hash, not a query;
//! changes to tokens or roles made through this node clear the cache at once, and other nodes
//! see them within the TTL.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ballast_api::auth::{Permission, Role, ANY_NAMESPACE};
use ballast_core::ErrorCode;
use ballast_store::{Ctx, Store};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// How long a token lookup is reused before the store is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Most cached lookups (the cache is emptied when it grows past this).
const CACHE_MAX: usize = 10_000;
/// Prefix of every token secret (lets secret scanners and people recognise one).
pub const TOKEN_PREFIX: &str = "blst_";
/// Name of the file holding the admin token created on first start.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Principal of the admin token created on first start.
pub const ADMIN_PRINCIPAL: &str = "admin";

/// Whether the server checks tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request but health, metrics and the OpenAPI document needs a token.
    #[default]
    On,
    /// No checks: every request may do everything (local experiments only).
    Off,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(AuthMode::On),
            "off" => Ok(AuthMode::Off),
            _ => Err(format!("auth must be on or off, not {s:?}")),
        }
    }
}

/// Who a request acts as, and the roles they hold.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The principal's name (recorded as the actor of changes).
    pub name: String,
    /// `(namespace or *, role)` pairs.
    pub roles: Arc<[(String, Role)]>,
    /// `false` under `--auth off`: every check passes.
    pub enforced: bool,
}

impl Principal {
    /// The principal of every request when authentication is off.
    #[must_use]
    pub fn unchecked(name: String) -> Self {
        Self {
            name,
            roles: Arc::from(Vec::new()),
            enforced: false,
        }
    }

    /// Whether the principal holds `perm` in namespace `ns` (`*` asks for every namespace).
    #[must_use]
    pub fn can(&self, perm: Permission, ns: &str) -> bool {
        !self.enforced
            || self
                .roles
                .iter()
                .any(|(n, r)| (n == ANY_NAMESPACE || n == ns) && r.grants(perm))
    }

    /// The namespaces the principal may read, or `None` when they may read all of them.
    #[must_use]
    pub fn readable_namespaces(&self) -> Option<Vec<String>> {
        if self.can(Permission::Read, ANY_NAMESPACE) {
            return None;
        }
        let mut v: Vec<String> = self.roles.iter().map(|(n, _)| n.clone()).collect();
        v.sort();
        v.dedup();
        Some(v)
    }

    /// `permission_denied` naming what was missing and how to get it.
    #[must_use]
    pub fn denied(&self, perm: Permission, ns: &str) -> ApiError {
        let roles: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|r| r.grants(perm))
            .map(Role::as_str)
            .collect();
        let scope = if ns == ANY_NAMESPACE {
            "every namespace (*)".to_owned()
        } else {
            format!("namespace {ns}")
        };
        ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "{} may not {} in {scope}: that needs one of the roles {} there; an admin can grant one with `ballast role grant {} {} <role>`",
                self.name,
                perm.as_str(),
                roles.join(", "),
                self.name,
                if ns == ANY_NAMESPACE { "'*'" } else { ns },
            ),
        )
    }
}

/// The SHA-256 (hex) under which a secret is stored.
#[must_use]
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret, the prefix shown in listings, and its hash.
#[must_use]
pub fn new_secret() -> (String, String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let prefix = secret[..TOKEN_PREFIX.len() + 6].to_owned();
    let hash = secret_hash(&secret);
    (secret, prefix, hash)
}

type Cached = (Instant, Option<Principal>);

/// Checks bearer tokens.
pub struct Authenticator {
    mode: AuthMode,
    store: Arc<dyn Store>,
    cache: RwLock<HashMap<String, Cached>>,
    token_file: PathBuf,
}

impl Authenticator {
    /// An authenticator over the store's tokens.
    #[must_use]
    pub fn new(mode: AuthMode, store: Arc<dyn Store>, data_dir: &Path) -> Self {
        Self {
            mode,
            store,
            cache: RwLock::new(HashMap::new()),
            token_file: data_dir.join(ADMIN_TOKEN_FILE),
        }
    }

    /// Whether tokens are checked.
    #[must_use]
    pub fn enforced(&self) -> bool {
        self.mode == AuthMode::On
    }

    /// Forgets cached lookups (after a token or role changed).
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.cache.write() {
            c.clear();
        }
    }

    /// The principal named by an `Authorization` header value.
    ///
    /// # Errors
    /// `unauthenticated` when the header is missing, malformed, or names a token that is unknown,
    /// expired or revoked (one answer for all, so tokens cannot be probed).
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, ApiError> {
        let Some(raw) = authorization else {
            return Err(
                self.unauthenticated("this request needs a token: send Authorization: Bearer <token>")
            );
        };
        let secret = std::str::from_utf8(raw)
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| self.unauthenticated("the Authorization header must be `Bearer <token>`"))?;
        let hash = secret_hash(secret);
        let now = Instant::now();
        let hit = self.cache.read().ok().and_then(|c| {
            c.get(&hash)
                .filter(|(at, _)| now.duration_since(*at) < CACHE_TTL)
                .cloned()
        });
        let found = match hit {
            Some((_, p)) => p,
            None => {
                let p = self.lookup(&hash).await?;
                if let Ok(mut c) = self.cache.write() {
                    if c.len() >= CACHE_MAX {
                        c.clear();
                    }
                    c.insert(hash, (now, p.clone()));
                }
                p
            }
        };
        found.ok_or_else(|| self.unauthenticated("the token is unknown, expired or revoked"))
    }

    async fn lookup(&self, hash: &str) -> Result<Option<Principal>, ApiError> {
        let Some(t) = self.store.token_by_hash(hash).await? else {
            return Ok(None);
        };
        if !t.usable {
            return Ok(None);
        }
        let roles = self
            .store
            .list_roles(Some(t.token.principal.clone()))
            .await?
            .into_iter()
            .map(|b| (b.namespace, b.role))
            .collect::<Vec<_>>();
        Ok(Some(Principal {
            name: t.token.principal,
            roles: Arc::from(roles),
            enforced: true,
        }))
    }

    fn unauthenticated(&self, what: &str) -> ApiError {
        ApiError::new(
            ErrorCode::Unauthenticated,
            format!(
                "{what}. Create tokens with `ballast token create`; the admin token made on first start is in {}",
                self.token_file.display()
            ),
        )
    }

    /// On first start (no token exists), creates the admin token and writes its secret to
    /// `<data-dir>/admin.token` (mode 0600) before recording it, so a crash in between leaves at
    /// worst a file that the next start replaces. Returns the file's path when it was written.
    ///
    /// # Errors
    /// When the file cannot be written or the store fails.
    pub async fn bootstrap(&self) -> anyhow::Result<Option<PathBuf>> {
        if !self.enforced() || !self.store.list_tokens().await.map_err(store_err)?.is_empty() {
            return Ok(None);
        }
        let (secret, prefix, hash) = new_secret();
        write_private(&self.token_file, format!("{secret}\n").as_bytes())?;
        let ctx = Ctx {
            actor: "system".into(),
            request_id: String::new(),
            idempotency: None,
        };
        let made = self
            .store
            .bootstrap_admin(&ctx, ADMIN_PRINCIPAL, prefix, hash)
            .await
            .map_err(store_err)?;
        if made.is_none() {
            // Another node created the first token meanwhile; ours was never recorded.
            let _ = std::fs::remove_file(&self.token_file);
            return Ok(None);
        }
        Ok(Some(self.token_file.clone()))
    }
}

fn store_err(e: ballast_store::StoreError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

/// Writes `bytes` to `path` atomically with mode 0600 (temporary file, fsync, rename, directory
/// fsync).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| anyhow::anyhow!("cannot write the admin token to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(roles: &[(&str, Role)]) -> Principal {
        Principal {
            name: "p".into(),
            roles: roles
                .iter()
                .map(|(n, r)| ((*n).to_owned(), *r))
                .collect::<Vec<_>>()
                .into(),
            enforced: true,
        }
    }

    #[test]
    fn roles_grant_by_namespace() {
        let w = p(&[("acme", Role::Writer)]);
        assert!(w.can(Permission::Read, "acme"));
        assert!(w.can(Permission::Write, "acme"));
        assert!(!w.can(Permission::Maintain, "acme"));
        assert!(!w.can(Permission::Review, "acme"));
        assert!(!w.can(Permission::Read, "other"));
        assert!(!w.can(Permission::Read, ANY_NAMESPACE));
        assert_eq!(w.readable_namespaces(), Some(vec!["acme".to_owned()]));
        let a = p(&[("*", Role::Admin)]);
        assert!(a.can(Permission::Admin, ANY_NAMESPACE));
        assert!(a.can(Permission::Review, "x"));
        assert_eq!(a.readable_namespaces(), None);
        let r = p(&[("*", Role::Reviewer)]);
        assert!(r.can(Permission::Review, "x") && !r.can(Permission::Write, "x"));
        assert!(Principal::unchecked("x".into()).can(Permission::Admin, "*"));
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let (s1, p1, h1) = new_secret();
        let (s2, _, h2) = new_secret();
        assert_ne!(s1, s2);
        assert_ne!(h1, h2);
        assert!(s1.starts_with(TOKEN_PREFIX) && s1.starts_with(&p1));
        assert_eq!(h1, secret_hash(&s1));
        assert_eq!(h1.len(), 64);
    }
}
