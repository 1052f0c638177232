//! Listings: models and versions, walked page by page with cursors (nothing missed, nothing
//! twice), with every filter and ordering the API documents.

use std::collections::BTreeSet;

use ballast_api::{ModelList, Version, VersionList};
use reqwest::StatusCode;
use serde_json::json;

use crate::app::{ok, TestApp};

/// Walks every page of a model listing with `params`; checks page sizes and cursors.
async fn walk_models(app: &TestApp, params: &[(&str, &str)], limit: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        q.push(("limit", limit.to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let r = app.get("/v1/models").query(&q).send().await.unwrap();
        let page: ModelList = ok(r, StatusCode::OK).await;
        pages += 1;
        assert!(page.models.len() <= limit);
        names.extend(page.models.into_iter().map(|m| m.name));
        match page.next_cursor {
            Some(c) => {
                assert_eq!(names.len() % limit, 0, "only full pages have a next cursor");
                cursor = Some(c);
            }
            None => break,
        }
        assert!(pages < 1000, "cursor loop");
    }
    assert_eq!(
        pages,
        names.len().div_ceil(limit).max(1),
        "{params:?}: page count"
    );
    names
}

/// Walks every page of a version listing; returns the version numbers in order.
pub async fn walk_versions(app: &TestApp, model: &str, params: &[(&str, &str)], limit: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        q.push(("limit", limit.to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let r = app
            .get(&format!("/v1/models/{model}/versions"))
            .query(&q)
            .send()
            .await
            .unwrap();
        let page: VersionList = ok(r, StatusCode::OK).await;
        assert!(page.versions.len() <= limit);
        out.extend(page.versions.iter().map(|v| v.version));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(out.len() < 100_000, "cursor loop");
    }
    out
}

/// A created model: namespace, name, tier tag, whether it has the `flag` tag.
type Entry = (String, String, &'static str, bool);

#[tokio::test]
async fn models_paginate_and_filter() {
    let app = crate::app::spawn_app().await;
    // "team" sorts before "team-a" as a namespace, although "team-a/…" < "team/…" as strings.
    let mut all: Vec<Entry> = Vec::new();
    for i in 0..23 {
        let ns = ["team", "team-a", "team-b"][i % 3];
        let name = format!("model-{i:02}");
        let tier = if i % 4 == 0 { "gold" } else { "silver" };
        let flagged = i % 5 == 0;
        let mut tags = json!({ "tier": tier });
        if flagged {
            tags["flag"] = json!("");
        }
        let r = app
            .post(
                "/v1/models",
                &json!({ "name": format!("{ns}/{name}"), "tags": tags }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        all.push((ns.to_owned(), name, tier, flagged));
    }
    all.sort();
    let full = |f: &dyn Fn(&Entry) -> bool| -> Vec<String> {
        all.iter()
            .filter(|m| f(m))
            .map(|m| format!("{}/{}", m.0, m.1))
            .collect()
    };

    for limit in [1, 5, 7, 23, 1000] {
        let names = walk_models(&app, &[], limit).await;
        assert_eq!(names, full(&|_| true), "limit {limit}");
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), 23, "no duplicates");
    }
    assert_eq!(
        walk_models(&app, &[("namespace", "team-a")], 3).await,
        full(&|m| m.0 == "team-a")
    );
    assert_eq!(
        walk_models(&app, &[("namespace", "team")], 2).await,
        full(&|m| m.0 == "team")
    );
    assert_eq!(
        walk_models(&app, &[("prefix", "team-b/model-1")], 2).await,
        full(&|m| m.0 == "team-b" && m.1.starts_with("model-1"))
    );
    assert_eq!(
        walk_models(&app, &[("prefix", "team-")], 4).await,
        full(&|m| m.0 != "team")
    );
    assert_eq!(
        walk_models(&app, &[("tag", "tier=gold")], 2).await,
        full(&|m| m.2 == "gold")
    );
    assert_eq!(walk_models(&app, &[("tag", "flag")], 2).await, full(&|m| m.3));
    assert_eq!(
        walk_models(&app, &[("tag", "flag=yes")], 2).await,
        Vec::<String>::new()
    );
    assert_eq!(
        walk_models(&app, &[("namespace", "team-b"), ("tag", "tier=silver")], 3).await,
        full(&|m| m.0 == "team-b" && m.2 == "silver")
    );
    assert_eq!(
        walk_models(&app, &[("namespace", "nobody")], 3).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn versions_filter_order_and_paginate() {
    let app = crate::app::spawn_app().await;
    app.create_model("acme/search").await;
    // accuracy has ties (0.2, 0.5, …) to exercise the cursor's tie-break on the number.
    let accuracy = |i: u64| ((i * 5) % 6) as f64 / 10.0;
    let latency = |i: u64| 100.0 - i as f64;
    for i in 1..=12u64 {
        let metrics = if i <= 10 {
            json!({ "accuracy": accuracy(i), "latency": latency(i) })
        } else {
            json!({})
        };
        let mut tags = json!({ "parity": if i % 2 == 0 { "even" } else { "odd" } });
        if i % 4 == 0 {
            tags["gpu"] = json!("a100");
        }
        let v = app
            .create_version(
                "acme/search",
                &json!({ "metadata": { "metrics": metrics }, "tags": tags }),
            )
            .await;
        assert_eq!(v.version, i);
    }
    // Sealed: 3, 6, 9, 12. Stages: 3 staging, 6 production, 9 staging, 12 archived.
    for n in [3u64, 6, 9, 12] {
        app.upload("acme/search", n, "w.bin", format!("weights {n}").as_bytes())
            .await;
        app.seal("acme/search", n).await;
    }
    for n in [3u64, 6, 9] {
        app.set_stage("acme/search", n, "staging").await;
    }
    app.set_stage("acme/search", 6, "production").await;
    app.set_stage("acme/search", 12, "archived").await;

    let desc: Vec<u64> = (1..=12).rev().collect();
    for limit in [1, 5, 12, 100] {
        assert_eq!(
            walk_versions(&app, "acme/search", &[], limit).await,
            desc,
            "default order, limit {limit}"
        );
    }
    let asc: Vec<u64> = (1..=12).collect();
    assert_eq!(
        walk_versions(&app, "acme/search", &[("order", "asc")], 5).await,
        asc
    );
    assert_eq!(
        walk_versions(
            &app,
            "acme/search",
            &[("order_by", "created_at"), ("order", "asc")],
            5
        )
        .await,
        asc
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("order_by", "created_at")], 7).await,
        desc
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("stage", "staging")], 1).await,
        [9, 3]
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("stage", "production")], 1).await,
        [6]
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("stage", "archived")], 1).await,
        [12]
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("stage", "development")], 3).await,
        [11, 10, 8, 7, 5, 4, 2, 1]
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("state", "sealed")], 3).await,
        [12, 9, 6, 3]
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("state", "draft")], 3).await,
        [11, 10, 8, 7, 5, 4, 2, 1]
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("tag", "parity=even")], 4).await,
        [12, 10, 8, 6, 4, 2]
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("tag", "gpu")], 4).await,
        [12, 8, 4]
    );
    assert_eq!(
        walk_versions(
            &app,
            "acme/search",
            &[("tag", "parity=even"), ("tag", "gpu=a100")],
            1
        )
        .await,
        [12, 8, 4]
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("tag", "parity=odd"), ("tag", "gpu")], 1).await,
        Vec::<u64>::new()
    );

    // Metric thresholds (repeatable, all must hold).
    let with = |f: &dyn Fn(u64) -> bool| -> Vec<u64> { (1..=10).rev().filter(|i| f(*i)).collect() };
    assert_eq!(
        walk_versions(&app, "acme/search", &[("metric", "accuracy>=0.3")], 2).await,
        with(&|i| accuracy(i) >= 0.3)
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("metric", "accuracy<0.2")], 2).await,
        with(&|i| accuracy(i) < 0.2)
    );
    assert_eq!(
        walk_versions(
            &app,
            "acme/search",
            &[("metric", "accuracy>0.1"), ("metric", "latency<=95")],
            2
        )
        .await,
        with(&|i| accuracy(i) > 0.1 && latency(i) <= 95.0)
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("metric", "accuracy=0.5")], 2).await,
        with(&|i| (accuracy(i) - 0.5).abs() < 1e-9)
    );

    // Ordering by a metric: versions without it are left out; ties break on the number.
    let mut by_acc: Vec<u64> = (1..=10).collect();
    by_acc.sort_by(|a, b| accuracy(*a).total_cmp(&accuracy(*b)).then(a.cmp(b)));
    for limit in [1, 3, 4, 100] {
        assert_eq!(
            walk_versions(
                &app,
                "acme/search",
                &[("order_by", "metric:accuracy"), ("order", "asc")],
                limit
            )
            .await,
            by_acc,
            "asc, limit {limit}"
        );
        let mut rev = by_acc.clone();
        rev.reverse();
        assert_eq!(
            walk_versions(&app, "acme/search", &[("order_by", "metric:accuracy")], limit).await,
            rev,
            "desc, limit {limit}"
        );
    }
    assert_eq!(
        walk_versions(
            &app,
            "acme/search",
            &[("order_by", "metric:accuracy"), ("tag", "parity=even")],
            2
        )
        .await,
        {
            let mut v: Vec<u64> = by_acc.iter().copied().filter(|i| i % 2 == 0).collect();
            v.reverse();
            v
        }
    );
    assert_eq!(
        walk_versions(&app, "acme/search", &[("order_by", "metric:unknown")], 2).await,
        Vec::<u64>::new()
    );

    // The page content is the full version.
    let r = app
        .get("/v1/models/acme/search/versions")
        .query(&[("stage", "production")])
        .send()
        .await
        .unwrap();
    let page: VersionList = ok(r, StatusCode::OK).await;
    let v: &Version = &page.versions[0];
    assert_eq!(
        (v.version, v.files.len(), v.tags["parity"].as_str()),
        (6, 1, "even")
    );
}
