//! Listings ordered by name sort by bytes on every backend, also on a PostgreSQL database whose
//! default collation is a natural-language one (ICU `en-US`, where `a` sorts before `B` and
//! punctuation before letters): clients paging or diffing listings see one order everywhere.

use std::sync::Arc;

use ballast_api::auth::{GrantRole, Role};
use ballast_api::deployments::SetRoute;
use ballast_store::{PgOptions, SqlStore, Store};

use crate::conformance::{ctx, model};
use crate::nodes::DropDatabase;
use crate::postgres::admin_url;

const ROUTES: [&str; 4] = ["a", "_x", "Z-1", "B"];
const ROUTES_BY_BYTES: [&str; 4] = ["B", "Z-1", "_x", "a"];
const PRINCIPALS: [&str; 4] = ["amy", "_svc", "Zed", "Bob"];
const PRINCIPALS_BY_BYTES: [&str; 4] = ["Bob", "Zed", "_svc", "amy"];

async fn listings_sort_by_bytes(store: &dyn Store) {
    model(store, "acme/bot", &[]).await;
    for r in ROUTES {
        let spec: SetRoute = serde_json::from_value(serde_json::json!({ "target": "acme/bot:production" }))
            .expect("route spec");
        store.set_route(&ctx("root"), r, spec).await.expect("set route");
    }
    let names: Vec<String> = store
        .list_routes()
        .await
        .expect("routes")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ROUTES_BY_BYTES);

    for p in PRINCIPALS {
        for ns in ["acme", "*"] {
            store
                .grant_role(
                    &ctx("root"),
                    GrantRole {
                        principal: p.into(),
                        namespace: ns.into(),
                        role: Role::Reader,
                    },
                )
                .await
                .expect("grant");
        }
    }
    let roles: Vec<(String, String)> = store
        .list_roles(None)
        .await
        .expect("roles")
        .into_iter()
        .map(|b| (b.principal, b.namespace))
        .collect();
    let expected: Vec<(String, String)> = PRINCIPALS_BY_BYTES
        .iter()
        .flat_map(|p| {
            [
                ((*p).to_owned(), "*".to_owned()),
                ((*p).to_owned(), "acme".to_owned()),
            ]
        })
        .collect();
    assert_eq!(roles, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_listings_sort_by_bytes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqlStore::open(&dir.path().join("ballast.db")).expect("open");
    listings_sort_by_bytes(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_listings_sort_by_bytes_under_a_language_collation() {
    let Some(admin) = admin_url() else {
        return;
    };
    let db = format!("ballast_c_{:016x}", rand::random::<u64>());
    let (guard, store) = tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("connect to the test server");
        client
            .batch_execute(&format!(
                "CREATE DATABASE {db} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            ))
            .expect("create a database with an ICU en-US collation");
        let (base, _) = admin.rsplit_once('/').expect("a URL with a database name");
        let guard = DropDatabase {
            url: format!("{base}/{db}"),
            admin,
        };
        let store = SqlStore::connect(&guard.url, &PgOptions::default()).expect("open");
        (guard, Arc::new(store))
    })
    .await
    .expect("open task");
    listings_sort_by_bytes(store.as_ref()).await;
    store.close().await;
    tokio::task::spawn_blocking(move || drop((store, guard)))
        .await
        .expect("drop task");
}
