//! Tokens and role bindings. Secrets never reach the store: the server hands over the SHA-256 of
//! each secret and a short prefix to recognise it by. Every change is audited with its event.

use async_trait::async_trait;
use ballast_api::auth::{
    is_namespace_pattern, is_principal, CreateToken, GrantRole, Role, RoleBinding, Token,
};
use ballast_core::ErrorCode;
use serde_json::{json, Value};

use super::ops::record_change;
use super::query::{bytewise, format_time, now, to_i64, to_u64};
use super::SqlStore;
use crate::db::{Db, Row};
use crate::params;
use crate::{AuthStore, Ctx, StoreError, StoreResult, TokenLookup};

/// Most tokens one request may create roles for, and the longest description.
const MAX_ROLES_PER_TOKEN: usize = 32;
const MAX_DESCRIPTION: usize = 1024;

fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    StoreError {
        code: ErrorCode::InvalidArgument,
        message: message.into(),
        field: Some(field.into()),
    }
}

fn check_principal(p: &str) -> StoreResult<()> {
    if is_principal(p) {
        Ok(())
    } else {
        Err(invalid(
            "principal",
            format!("principal {p:?} must be 1-128 characters of letters, digits and . _ @ + -"),
        ))
    }
}

fn check_namespace(ns: &str) -> StoreResult<()> {
    if is_namespace_pattern(ns) {
        Ok(())
    } else {
        Err(invalid(
            "namespace",
            format!("namespace {ns:?} must be * (every namespace) or a valid namespace name"),
        ))
    }
}

/// Parses an RFC 3339 time and renders it in the store's sortable form.
fn normalize_time(field: &str, s: &str) -> StoreResult<String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| {
        invalid(
            field,
            format!("{field} must be an RFC 3339 time such as 2027-01-31T00:00:00Z; got {s:?}"),
        )
    })?;
    Ok(format_time(t.to_offset(time::UtcOffset::UTC)))
}

const TOKEN_COLUMNS: &str =
    "id, principal, description, prefix, created_at, created_by, expires_at, revoked_at";

fn token_row(r: &Row) -> StoreResult<Token> {
    Ok(Token {
        id: to_u64(r.get(0)?),
        principal: r.get(1)?,
        description: r.get(2)?,
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        created_by: r.get(5)?,
        expires_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

fn load_token(db: &dyn Db, id: u64) -> StoreResult<Token> {
    db.query_row_opt(
        &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
        params![to_i64(id)],
        token_row,
    )?
    .ok_or_else(|| StoreError::not_found(format!("token {id}")))
}

fn token_json(t: &Token) -> Value {
    json!({
        "id": t.id, "principal": t.principal, "description": t.description, "prefix": t.prefix,
        "expires_at": t.expires_at, "revoked_at": t.revoked_at,
    })
}

fn binding_row(r: &Row) -> StoreResult<RoleBinding> {
    let role: String = r.get(2)?;
    Ok(RoleBinding {
        principal: r.get(0)?,
        namespace: r.get(1)?,
        role: role.parse().unwrap_or(Role::Reader),
        granted_at: r.get(3)?,
        granted_by: r.get(4)?,
    })
}

fn insert_token(
    db: &dyn Db,
    ctx: &Ctx,
    req: &CreateToken,
    prefix: &str,
    secret_sha256: &str,
) -> StoreResult<Token> {
    check_principal(&req.principal)?;
    if req.description.len() > MAX_DESCRIPTION {
        return Err(invalid(
            "description",
            format!("descriptions are at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    if req.roles.len() > MAX_ROLES_PER_TOKEN {
        return Err(invalid(
            "roles",
            format!("at most {MAX_ROLES_PER_TOKEN} roles can be granted with a token"),
        ));
    }
    let expires_at = match &req.expires_at {
        None => None,
        Some(s) => {
            let t = normalize_time("expires_at", s)?;
            if t <= now() {
                return Err(invalid(
                    "expires_at",
                    format!("expires_at {s} is in the past; a token must expire in the future"),
                ));
            }
            Some(t)
        }
    };
    let id = db
        .query_one(
            "INSERT INTO tokens (principal, description, prefix, secret_sha256, created_at, created_by, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
            params![
                req.principal,
                req.description,
                prefix,
                secret_sha256,
                now(),
                ctx.actor,
                expires_at
            ],
        )?
        .get::<u64>(0)?;
    let token = load_token(db, id)?;
    record_change(
        db,
        ctx,
        "token.created",
        &format!("token/{}", token.id),
        &Value::Null,
        &token_json(&token),
    )?;
    for r in &req.roles {
        grant(
            db,
            ctx,
            &GrantRole {
                principal: req.principal.clone(),
                namespace: r.namespace.clone(),
                role: r.role,
            },
        )?;
    }
    Ok(token)
}

fn grant(db: &dyn Db, ctx: &Ctx, req: &GrantRole) -> StoreResult<RoleBinding> {
    check_principal(&req.principal)?;
    check_namespace(&req.namespace)?;
    let inserted = db.execute(
        "INSERT INTO role_bindings (principal, namespace, role, granted_at, granted_by)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (principal, namespace, role) DO NOTHING",
        params![req.principal, req.namespace, req.role.as_str(), now(), ctx.actor],
    )?;
    let binding = binding_row(&db.query_one(
        "SELECT principal, namespace, role, granted_at, granted_by FROM role_bindings
         WHERE principal = ?1 AND namespace = ?2 AND role = ?3",
        params![req.principal, req.namespace, req.role.as_str()],
    )?)?;
    if inserted > 0 {
        record_change(
            db,
            ctx,
            "role.granted",
            &format!("principal/{}", req.principal),
            &Value::Null,
            &json!({ "principal": req.principal, "namespace": req.namespace, "role": req.role }),
        )?;
    }
    Ok(binding)
}

/// Whether some token other than `except` still works for a principal holding `admin` on `*`
/// once `revoked` (a role binding) is gone — the registry must never lock its admins out.
fn admin_remains(db: &dyn Db, except_token: Option<u64>, revoked: Option<&GrantRole>) -> StoreResult<bool> {
    let (rp, rns, rrole) = revoked.map_or((None, None, None), |g| {
        (
            Some(g.principal.clone()),
            Some(g.namespace.clone()),
            Some(g.role.as_str()),
        )
    });
    // Text comparisons here are equality only (the times sort as text by construction).
    let sql = "SELECT EXISTS (SELECT 1 FROM tokens t JOIN role_bindings b ON b.principal = t.principal
               WHERE b.namespace = '*' AND b.role = 'admin' AND t.revoked_at IS NULL
                 AND (t.expires_at IS NULL OR t.expires_at > CAST(?1 AS TEXT))
                 AND (CAST(?2 AS BIGINT) IS NULL OR t.id <> CAST(?2 AS BIGINT))
                 AND NOT (CAST(?3 AS TEXT) IS NOT NULL AND b.principal = CAST(?3 AS TEXT)
                          AND b.namespace = CAST(?4 AS TEXT) AND b.role = CAST(?5 AS TEXT)))";
    db.query_one(sql, params![now(), except_token.map(to_i64), rp, rns, rrole])?
        .get::<bool>(0)
}

fn last_admin() -> StoreError {
    StoreError::new(
        ErrorCode::Conflict,
        "refused: afterwards no usable token would hold admin on *, and nobody could manage tokens or roles; create another admin token first (ballast token create --principal NAME --role '*=admin')",
    )
}

#[async_trait]
impl AuthStore for SqlStore {
    async fn create_token(
        &self,
        ctx: &Ctx,
        req: CreateToken,
        prefix: String,
        secret_sha256: String,
    ) -> StoreResult<Token> {
        let c = ctx.clone();
        self.write(ctx, move |db| insert_token(db, &c, &req, &prefix, &secret_sha256))
            .await
    }

    async fn bootstrap_admin(
        &self,
        ctx: &Ctx,
        principal: &str,
        prefix: String,
        secret_sha256: String,
    ) -> StoreResult<Option<Token>> {
        let c = ctx.clone();
        let req = CreateToken {
            principal: principal.to_owned(),
            description: "created on first start".into(),
            expires_at: None,
            roles: vec![ballast_api::auth::GrantRoleIn {
                namespace: ballast_api::auth::ANY_NAMESPACE.into(),
                role: Role::Admin,
            }],
        };
        self.write_internal(move |db| {
            let any: bool = db
                .query_one("SELECT EXISTS (SELECT 1 FROM tokens)", params![])?
                .get::<bool>(0)?;
            if any {
                return Ok(None);
            }
            insert_token(db, &c, &req, &prefix, &secret_sha256).map(Some)
        })
        .await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<Token>> {
        self.read(|db| {
            db.query_map(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"),
                params![],
                token_row,
            )
        })
        .await
    }

    async fn revoke_token(&self, ctx: &Ctx, id: u64) -> StoreResult<Token> {
        let c = ctx.clone();
        self.write(ctx, move |db| {
            let before = load_token(db, id)?;
            if before.revoked_at.is_some() {
                return Ok(before);
            }
            if !admin_remains(db, Some(id), None)? && admin_remains(db, None, None)? {
                return Err(last_admin());
            }
            db.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1",
                params![to_i64(id), now()],
            )?;
            let after = load_token(db, id)?;
            record_change(
                db,
                &c,
                "token.revoked",
                &format!("token/{id}"),
                &token_json(&before),
                &token_json(&after),
            )?;
            Ok(after)
        })
        .await
    }

    async fn token_by_hash(&self, secret_sha256: &str) -> StoreResult<Option<TokenLookup>> {
        let h = secret_sha256.to_owned();
        self.read(move |db| {
            let token = db.query_row_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_sha256 = ?1"),
                params![h],
                token_row,
            )?;
            Ok(token.map(|token| {
                let now = now();
                let usable = token.revoked_at.is_none() && token.expires_at.as_ref().is_none_or(|e| *e > now);
                TokenLookup { token, usable }
            }))
        })
        .await
    }

    async fn grant_role(&self, ctx: &Ctx, req: GrantRole) -> StoreResult<RoleBinding> {
        let c = ctx.clone();
        self.write(ctx, move |db| grant(db, &c, &req)).await
    }

    async fn revoke_role(&self, ctx: &Ctx, req: GrantRole) -> StoreResult<()> {
        let c = ctx.clone();
        self.write(ctx, move |db| {
            if req.role == Role::Admin
                && req.namespace == ballast_api::auth::ANY_NAMESPACE
                && !admin_remains(db, None, Some(&req))?
                && admin_remains(db, None, None)?
            {
                return Err(last_admin());
            }
            let n = db.execute(
                "DELETE FROM role_bindings WHERE principal = ?1 AND namespace = ?2 AND role = ?3",
                params![req.principal, req.namespace, req.role.as_str()],
            )?;
            if n == 0 {
                return Err(StoreError::not_found(format!(
                    "role {} of {} in namespace {}",
                    req.role, req.principal, req.namespace
                )));
            }
            record_change(
                db,
                &c,
                "role.revoked",
                &format!("principal/{}", req.principal),
                &json!({ "principal": req.principal, "namespace": req.namespace, "role": req.role }),
                &Value::Null,
            )
        })
        .await
    }

    async fn list_roles(&self, principal: Option<String>) -> StoreResult<Vec<RoleBinding>> {
        self.read(move |db| {
            let c = bytewise(db);
            let sql = format!(
                "SELECT principal, namespace, role, granted_at, granted_by FROM role_bindings
                 WHERE CAST(?1 AS TEXT) IS NULL OR principal = CAST(?1 AS TEXT)
                 ORDER BY principal{c}, namespace{c}, role{c}"
            );
            db.query_map(&sql, params![principal], binding_row)
        })
        .await
    }
}
