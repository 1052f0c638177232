//! Listings and search: keyset pages without duplicates or gaps, filters on tags, metrics,
//! stage and state, and every version order.

use std::sync::Arc;

use ballast_api::UpdateModel;
use ballast_core::{ErrorCode, Stage};
use ballast_store::{MetricFilter, ModelFilter, Precondition, Store, VersionFilter, VersionOrder};

use super::{code, ctx, draft, model, name, sealed};

async fn model_pages(store: &dyn Store, filter: ModelFilter) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = filter.cursor.clone();
    for _ in 0..1000 {
        let page = store
            .list_models(ModelFilter {
                cursor: cursor.clone(),
                ..filter.clone()
            })
            .await
            .expect("list models");
        assert!(page.models.len() <= filter.limit.max(1) as usize);
        out.extend(page.models.into_iter().map(|m| m.name));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("paging did not end");
}

async fn version_pages(store: &dyn Store, m: &ballast_core::ModelName, filter: VersionFilter) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cursor = filter.cursor.clone();
    for _ in 0..1000 {
        let page = store
            .list_versions(
                m,
                VersionFilter {
                    cursor: cursor.clone(),
                    ..filter.clone()
                },
            )
            .await
            .expect("list versions");
        assert!(page.versions.len() <= filter.limit.max(1) as usize);
        out.extend(page.versions.into_iter().map(|v| v.version));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("paging did not end");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Model pages follow the byte order of namespace and name (as the cursors compare them), not the
/// collation of the database's locale, which orders punctuation differently.
pub async fn model_pages_are_in_byte_order(store: Arc<dyn Store>) {
    let names = [
        "ns_x/c", "ns-x/b", "ns.x/a", "ns/a_c", "ns/a-b", "ns/a.d", "ns/a1", "ns/ab", "ns/b", "nsa/a",
    ];
    for n in names {
        model(store.as_ref(), n, &[]).await;
    }
    let mut want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    // By namespace, then name, each compared as bytes.
    want.sort_unstable_by_key(|n| {
        let (ns, m) = n.split_once('/').unwrap_or_default();
        (ns.as_bytes().to_vec(), m.as_bytes().to_vec())
    });
    for limit in [1, 3, 100] {
        let got = model_pages(
            store.as_ref(),
            ModelFilter {
                limit,
                ..ModelFilter::default()
            },
        )
        .await;
        assert_eq!(got, want, "limit {limit}");
    }
    let got = model_pages(
        store.as_ref(),
        ModelFilter {
            prefix: Some("ns/a".into()),
            limit: 2,
            ..ModelFilter::default()
        },
    )
    .await;
    assert_eq!(got, ["ns/a-b", "ns/a.d", "ns/a1", "ns/a_c", "ns/ab"]);
}

/// Models page by name in every page size, each exactly once; a model created between pages
/// after the cursor shows up, one before it does not disturb the rest.
pub async fn model_pages_have_no_duplicates_or_gaps(store: Arc<dyn Store>) {
    let mut names = Vec::new();
    for ns in ["alpha", "beta", "gamma"] {
        for i in 0..7 {
            let full = format!("{ns}/model-{i:02}");
            model(store.as_ref(), &full, &[]).await;
            names.push(full);
        }
    }
    let names = sorted(names);
    for limit in [1, 2, 5, 21, 1000] {
        let got = model_pages(
            store.as_ref(),
            ModelFilter {
                limit,
                ..ModelFilter::default()
            },
        )
        .await;
        assert_eq!(got, names, "limit {limit}");
    }
    // Full last page: no cursor to an empty page is required, but an empty page must end it.
    let exact = store
        .list_models(ModelFilter {
            limit: 21,
            ..ModelFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(exact.models.len(), 21);
    if let Some(c) = exact.next_cursor {
        let rest = store
            .list_models(ModelFilter {
                limit: 21,
                cursor: Some(c),
                ..ModelFilter::default()
            })
            .await
            .expect("list");
        assert!(rest.models.is_empty() && rest.next_cursor.is_none());
    }

    // Changes between pages: later names appear, earlier ones are not repeated.
    let first = store
        .list_models(ModelFilter {
            limit: 10,
            ..ModelFilter::default()
        })
        .await
        .expect("page");
    model(store.as_ref(), "aaa/first", &[]).await;
    model(store.as_ref(), "zzz/last", &[]).await;
    let mut got: Vec<String> = first.models.into_iter().map(|m| m.name).collect();
    got.extend(
        model_pages(
            store.as_ref(),
            ModelFilter {
                limit: 4,
                cursor: first.next_cursor,
                ..ModelFilter::default()
            },
        )
        .await,
    );
    let mut want = names.clone();
    want.push("zzz/last".into());
    assert_eq!(got, want);
}

/// Namespace, prefix and tag filters, combined with paging.
pub async fn model_filters(store: Arc<dyn Store>) {
    for (full, team) in [
        ("acme/bot", "support"),
        ("acme/bot-v2", "support"),
        ("acme/ranker", "search"),
        ("other/bot", "support"),
        ("other/tagless", ""),
    ] {
        let tags: Vec<(&str, &str)> = if team.is_empty() {
            vec![]
        } else {
            vec![("team", team)]
        };
        model(store.as_ref(), full, &tags).await;
    }
    let list = |f: ModelFilter| {
        let store = Arc::clone(&store);
        async move { model_pages(store.as_ref(), f).await }
    };
    assert_eq!(
        list(ModelFilter {
            namespace: Some("acme".into()),
            limit: 2,
            ..ModelFilter::default()
        })
        .await,
        ["acme/bot", "acme/bot-v2", "acme/ranker"]
    );
    assert_eq!(
        list(ModelFilter {
            namespaces: Some(vec!["other".into()]),
            limit: 2,
            ..ModelFilter::default()
        })
        .await,
        ["other/bot", "other/tagless"]
    );
    assert!(list(ModelFilter {
        namespaces: Some(vec![]),
        limit: 2,
        ..ModelFilter::default()
    })
    .await
    .is_empty());
    assert_eq!(
        list(ModelFilter {
            prefix: Some("acme/bot".into()),
            limit: 1,
            ..ModelFilter::default()
        })
        .await,
        ["acme/bot", "acme/bot-v2"]
    );
    assert_eq!(
        list(ModelFilter {
            tag: Some(("team".into(), Some("support".into()))),
            limit: 2,
            ..ModelFilter::default()
        })
        .await,
        ["acme/bot", "acme/bot-v2", "other/bot"]
    );
    assert_eq!(
        list(ModelFilter {
            tag: Some(("team".into(), None)),
            limit: 100,
            ..ModelFilter::default()
        })
        .await
        .len(),
        4
    );
    assert!(list(ModelFilter {
        tag: Some(("team".into(), Some("nobody".into()))),
        limit: 100,
        ..ModelFilter::default()
    })
    .await
    .is_empty());
    // A tag change is seen by the next search.
    store
        .update_model(
            &ctx("a"),
            &name("acme/ranker"),
            UpdateModel {
                set_tags: [("team".to_owned(), "support".to_owned())].into(),
                ..UpdateModel::default()
            },
            Precondition::None,
        )
        .await
        .expect("update");
    assert_eq!(
        list(ModelFilter {
            namespace: Some("acme".into()),
            tag: Some(("team".into(), Some("support".into()))),
            limit: 100,
            ..ModelFilter::default()
        })
        .await,
        ["acme/bot", "acme/bot-v2", "acme/ranker"]
    );
}

/// Versions page by number (both directions), creation time and a metric, each exactly once.
pub async fn version_pages_in_every_order(store: Arc<dyn Store>) {
    const N: u64 = 23;
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    for i in 1..=N {
        // Metric values repeat, so ties are broken by number.
        let score = f64::from(u32::try_from(i % 5).expect("small")) / 4.0;
        if i % 7 == 0 {
            draft(store.as_ref(), &m, &[], &[]).await;
        } else {
            draft(store.as_ref(), &m, &[("score", score)], &[]).await;
        }
    }
    let asc: Vec<u64> = (1..=N).collect();
    let desc: Vec<u64> = (1..=N).rev().collect();
    for limit in [1, 4, 23, 1000] {
        let f = |order: VersionOrder, descending: bool| VersionFilter {
            order,
            descending,
            limit,
            ..VersionFilter::default()
        };
        assert_eq!(
            version_pages(store.as_ref(), &m, f(VersionOrder::Number, false)).await,
            asc
        );
        assert_eq!(
            version_pages(store.as_ref(), &m, f(VersionOrder::Number, true)).await,
            desc
        );

        let by_time = version_pages(store.as_ref(), &m, f(VersionOrder::CreatedAt, false)).await;
        let mut check = by_time.clone();
        check.sort_unstable();
        assert_eq!(check, asc, "created_at order, limit {limit}: every version once");
        let by_time_desc = version_pages(store.as_ref(), &m, f(VersionOrder::CreatedAt, true)).await;
        assert_eq!(
            by_time_desc,
            by_time.iter().rev().copied().collect::<Vec<_>>(),
            "limit {limit}"
        );

        // Metric order: versions without the metric are left out; ties by number.
        let mut want: Vec<(u64, u64)> = (1..=N).filter(|i| i % 7 != 0).map(|i| (i % 5, i)).collect();
        want.sort_unstable();
        let want_asc: Vec<u64> = want.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            version_pages(store.as_ref(), &m, f(VersionOrder::Metric("score".into()), false)).await,
            want_asc,
            "metric order, limit {limit}"
        );
        let want_desc: Vec<u64> = want_asc.iter().rev().copied().collect();
        assert_eq!(
            version_pages(store.as_ref(), &m, f(VersionOrder::Metric("score".into()), true)).await,
            want_desc,
            "metric order descending, limit {limit}"
        );
        assert!(version_pages(
            store.as_ref(),
            &m,
            f(VersionOrder::Metric("absent".into()), false)
        )
        .await
        .is_empty());
    }
}

/// Tag (key, key=value, several), metric threshold, stage and sealed filters, each with paging.
pub async fn version_tag_metric_and_stage_filters(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    // 1..=12: accuracy i/10 (0.1 .. 1.2); tag env=prod on evens, env=dev on odds, gpu on 3,6,9,12.
    for i in 1..=12u32 {
        let env = if i % 2 == 0 { "prod" } else { "dev" };
        let mut tags = vec![("env", env)];
        if i % 3 == 0 {
            tags.push(("gpu", "l4"));
        }
        let acc = f64::from(i) / 10.0;
        if i <= 8 {
            sealed(
                store.as_ref(),
                &m,
                &[("accuracy", acc), ("latency", f64::from(100 * i))],
                &tags,
            )
            .await;
        } else {
            draft(
                store.as_ref(),
                &m,
                &[("accuracy", acc), ("latency", f64::from(100 * i))],
                &tags,
            )
            .await;
        }
    }
    for n in [1, 2] {
        store
            .set_stage(&ctx("a"), &m, n, Stage::Staging, None, Precondition::None)
            .await
            .expect("stage");
    }
    let list = |f: VersionFilter| {
        let store = Arc::clone(&store);
        let m = m.clone();
        async move { version_pages(store.as_ref(), &m, VersionFilter { limit: 2, ..f }).await }
    };
    let tag = |k: &str, v: Option<&str>| (k.to_owned(), v.map(str::to_owned));
    let metric = |name: &str, op: &'static str, value: f64| MetricFilter {
        name: name.into(),
        op,
        value,
    };
    assert_eq!(
        list(VersionFilter {
            tags: vec![tag("env", Some("prod"))],
            ..VersionFilter::default()
        })
        .await,
        [2, 4, 6, 8, 10, 12]
    );
    assert_eq!(
        list(VersionFilter {
            tags: vec![tag("env", Some("prod")), tag("gpu", None)],
            ..VersionFilter::default()
        })
        .await,
        [6, 12]
    );
    assert_eq!(
        list(VersionFilter {
            metrics: vec![metric("accuracy", ">=", 0.9)],
            ..VersionFilter::default()
        })
        .await,
        [9, 10, 11, 12]
    );
    assert_eq!(
        list(VersionFilter {
            metrics: vec![metric("accuracy", ">", 0.3), metric("latency", "<", 700.0)],
            ..VersionFilter::default()
        })
        .await,
        [4, 5, 6]
    );
    assert_eq!(
        list(VersionFilter {
            metrics: vec![metric("latency", "=", 500.0)],
            ..VersionFilter::default()
        })
        .await,
        [5]
    );
    assert_eq!(
        list(VersionFilter {
            metrics: vec![metric("latency", "!=", 500.0), metric("latency", "<=", 700.0)],
            ..VersionFilter::default()
        })
        .await,
        [1, 2, 3, 4, 6, 7]
    );
    assert!(list(VersionFilter {
        metrics: vec![metric("f1", ">=", 0.0)],
        ..VersionFilter::default()
    })
    .await
    .is_empty());
    assert_eq!(
        list(VersionFilter {
            sealed: Some(false),
            ..VersionFilter::default()
        })
        .await,
        [9, 10, 11, 12]
    );
    assert_eq!(
        list(VersionFilter {
            sealed: Some(true),
            tags: vec![tag("gpu", Some("l4"))],
            ..VersionFilter::default()
        })
        .await,
        [3, 6]
    );
    assert_eq!(
        list(VersionFilter {
            stage: Some(Stage::Staging),
            ..VersionFilter::default()
        })
        .await,
        [1, 2]
    );
    assert_eq!(
        list(VersionFilter {
            stage: Some(Stage::Development),
            descending: true,
            metrics: vec![metric("accuracy", "<", 0.5)],
            ..VersionFilter::default()
        })
        .await,
        [4, 3]
    );
    // Metric order combined with a filter.
    assert_eq!(
        list(VersionFilter {
            tags: vec![tag("env", Some("dev"))],
            order: VersionOrder::Metric("latency".into()),
            descending: true,
            ..VersionFilter::default()
        })
        .await,
        [11, 9, 7, 5, 3, 1]
    );
}

/// A cursor that was not handed out is `invalid_argument`.
pub async fn bad_cursors_are_refused(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    draft(store.as_ref(), &m, &[], &[]).await;
    for bad in ["not a cursor", "%%%", "e30", ""] {
        let r = store
            .list_models(ModelFilter {
                limit: 10,
                cursor: Some(bad.into()),
                ..ModelFilter::default()
            })
            .await;
        assert_eq!(code(r), ErrorCode::InvalidArgument, "model cursor {bad:?}");
        let r = store
            .list_versions(
                &m,
                VersionFilter {
                    limit: 10,
                    cursor: Some(bad.into()),
                    ..VersionFilter::default()
                },
            )
            .await;
        assert_eq!(code(r), ErrorCode::InvalidArgument, "version cursor {bad:?}");
    }
    // Well-formed cursors whose key does not have the type of the listing's order.
    let cursor = |v: serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let r = store
        .list_models(ModelFilter {
            limit: 10,
            cursor: Some(cursor(serde_json::json!([1, 2]))),
            ..ModelFilter::default()
        })
        .await;
    assert_eq!(code(r), ErrorCode::InvalidArgument, "model cursor of numbers");
    let orders = [
        (VersionOrder::Number, serde_json::json!(["x", 1])),
        (VersionOrder::Number, serde_json::json!([1.5, 1])),
        (VersionOrder::CreatedAt, serde_json::json!([1, 1])),
        (VersionOrder::Metric("acc".into()), serde_json::json!(["x", 1])),
        (VersionOrder::Metric("acc".into()), serde_json::json!([null, 1])),
        (VersionOrder::Number, serde_json::json!([1, "x"])),
        (VersionOrder::Number, serde_json::json!([1])),
    ];
    for (order, bad) in orders {
        for descending in [false, true] {
            let r = store
                .list_versions(
                    &m,
                    VersionFilter {
                        limit: 10,
                        order: order.clone(),
                        descending,
                        cursor: Some(cursor(bad.clone())),
                        ..VersionFilter::default()
                    },
                )
                .await;
            assert_eq!(
                code(r),
                ErrorCode::InvalidArgument,
                "version cursor {bad} for {order:?}"
            );
        }
    }
}

/// Newest-first pages: a version created while a client pages does not push already-seen
/// versions onto later pages.
pub async fn versions_created_between_pages_are_not_repeated(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    for _ in 0..10 {
        draft(store.as_ref(), &m, &[], &[]).await;
    }
    let filter = VersionFilter {
        descending: true,
        limit: 3,
        ..VersionFilter::default()
    };
    let first = store.list_versions(&m, filter.clone()).await.expect("page");
    let mut got: Vec<u64> = first.versions.iter().map(|v| v.version).collect();
    assert_eq!(got, [10, 9, 8]);
    draft(store.as_ref(), &m, &[], &[]).await;
    got.extend(
        version_pages(
            store.as_ref(),
            &m,
            VersionFilter {
                cursor: first.next_cursor,
                ..filter
            },
        )
        .await,
    );
    assert_eq!(got, (1..=10).rev().collect::<Vec<u64>>());
}

/// A listed model or version is exactly what reading it alone returns: files, aliases, stage
/// and the production version belong to the right entry on every page.
pub async fn listed_entries_equal_single_reads(store: Arc<dyn Store>) {
    for (i, full) in ["acme/bot", "acme/ranker", "other/bot"].into_iter().enumerate() {
        let m = name(full);
        model(store.as_ref(), full, &[("team", "x")]).await;
        for _ in 0..=i {
            sealed(store.as_ref(), &m, &[("acc", 0.5)], &[]).await;
        }
        draft(store.as_ref(), &m, &[], &[("wip", "yes")]).await;
        store
            .set_alias(&ctx("a"), &m, &format!("a{i}"), 1, Precondition::None)
            .await
            .expect("alias");
        if i > 0 {
            for stage in [Stage::Staging, Stage::Production] {
                store
                    .set_stage(&ctx("a"), &m, 2, stage, None, Precondition::None)
                    .await
                    .expect("promote");
            }
            store
                .set_alias(&ctx("a"), &m, "champion", 2, Precondition::None)
                .await
                .expect("alias");
        }
    }
    let mut cursor = None;
    let mut seen = 0;
    loop {
        let page = store
            .list_models(ModelFilter {
                limit: 2,
                cursor: cursor.clone(),
                ..ModelFilter::default()
            })
            .await
            .expect("models");
        for listed in &page.models {
            let alone = store.get_model(&name(&listed.name)).await.expect("model");
            assert_eq!(super::json(listed), super::json(&alone));
            seen += 1;
        }
        let m = name("acme/ranker");
        let versions = store
            .list_versions(
                &m,
                VersionFilter {
                    limit: 2,
                    descending: true,
                    ..VersionFilter::default()
                },
            )
            .await
            .expect("versions");
        for listed in &versions.versions {
            let alone = store.get_version(&m, listed.version).await.expect("version");
            assert_eq!(super::json(listed), super::json(&alone));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, 3);
    let ranker = store.get_model(&name("acme/ranker")).await.expect("model");
    assert_eq!(ranker.production_version, Some(2));
    assert_eq!(ranker.aliases.get("champion"), Some(&2));
    assert_eq!(ranker.aliases.get("a1"), Some(&1));
    let bot = store.get_model(&name("acme/bot")).await.expect("model");
    assert_eq!(bot.production_version, None);
    assert_eq!(bot.aliases.len(), 1);
    let all = store
        .list_versions(
            &name("other/bot"),
            VersionFilter {
                limit: 100,
                ..VersionFilter::default()
            },
        )
        .await
        .expect("versions");
    for listed in &all.versions {
        let alone = store
            .get_version(&name("other/bot"), listed.version)
            .await
            .expect("version");
        assert_eq!(super::json(listed), super::json(&alone));
    }
    let files: Vec<usize> = all.versions.iter().map(|v| v.files.len()).collect();
    assert_eq!(files, [1, 1, 1, 0]);
}
