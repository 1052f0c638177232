//! The MLflow compatibility part of the store: free-form MLflow names mapped onto registry
//! names (and renamed without touching the registry name), the search index, versions with
//! MLflow's fields, multi-step stage moves, and the tracking documents (experiments, runs,
//! artifact paths) that registration flows rely on.

use std::sync::Arc;

use ballast_api::{Tags, VersionMetadata, VersionState};
use ballast_core::{ErrorCode, ModelName, Stage};
use ballast_store::mlflow::{MlflowObject, MlflowVersionInfo, NewMlflowVersion};
use ballast_store::{Precondition, Store};
use serde_json::json;

use super::{all_audit, code, ctx, file, model, name, sealed, trail};

/// The namespace MLflow names without one live in.
const NS: &str = "mlflow";

async fn create(store: &dyn Store, mlflow_name: &str) -> ModelName {
    let m = store
        .mlflow_create_model(
            &ctx("alice"),
            mlflow_name,
            NS,
            format!("{mlflow_name} model"),
            Tags::new(),
        )
        .await
        .expect("create an MLflow model");
    assert_eq!(m.name, mlflow_name, "answers with the name the client used");
    ModelName::parse(&m.model.name).expect("a registry name")
}

async fn resolve(store: &dyn Store, mlflow_name: &str) -> Result<ModelName, ErrorCode> {
    store.mlflow_resolve(mlflow_name, NS).await.map_err(|e| e.code)
}

fn info(run: &str) -> MlflowVersionInfo {
    MlflowVersionInfo {
        source: format!("mlflow-artifacts:/1/{run}/artifacts/model"),
        run_id: run.to_owned(),
        run_link: String::new(),
        logged_model_id: format!("m-{run}"),
        verified: true,
        description: None,
    }
}

async fn mlflow_version(store: &dyn Store, m: &ModelName, run: &str) -> u64 {
    let v = store
        .mlflow_create_version(
            &ctx("alice"),
            m,
            NewMlflowVersion {
                metadata: VersionMetadata {
                    description: format!("from run {run}"),
                    ..VersionMetadata::default()
                },
                tags: Tags::from([("run".to_owned(), run.to_owned())]),
                files: vec![
                    file("MLmodel", format!("flavors of {run}").as_bytes()),
                    file("model.pkl", format!("weights of {run}").as_bytes()),
                ],
                info: info(run),
            },
        )
        .await
        .expect("create an MLflow version");
    v.version.version
}

fn object(kind: &str, id: &str, name: Option<&str>, body: serde_json::Value) -> MlflowObject {
    MlflowObject {
        kind: kind.to_owned(),
        id: id.to_owned(),
        name: name.map(str::to_owned),
        body,
    }
}

/// Free-form names get a valid registry name of their own (collisions numbered); a model
/// created or renamed through MLflow answers to its MLflow name only, a native model to its
/// plain name; taken, invalid and unknown names are refused with stable codes and change
/// nothing; a rename is audited and keeps the registry name.
pub async fn names_map_onto_registry_names_and_rename(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let fraud = create(s, "Fraud Detector").await;
    assert_eq!(fraud.to_string(), "mlflow/fraud-detector");
    let lower = create(s, "fraud detector").await;
    assert_eq!(
        lower.to_string(),
        "mlflow/fraud-detector-2",
        "a colliding slug is numbered"
    );
    let scoped = create(s, "Team A/Churn").await;
    assert_eq!(scoped.to_string(), "team-a/churn");
    model(s, "mlflow/native", &[]).await;
    model(s, "acme/bot", &[]).await;

    assert_eq!(resolve(s, "Fraud Detector").await, Ok(fraud.clone()));
    assert_eq!(resolve(s, "fraud detector").await, Ok(lower.clone()));
    assert_eq!(resolve(s, "Team A/Churn").await, Ok(scoped.clone()));
    assert_eq!(resolve(s, "native").await, Ok(name("mlflow/native")));
    assert_eq!(resolve(s, "mlflow/native").await, Ok(name("mlflow/native")));
    assert_eq!(resolve(s, "acme/bot").await, Ok(name("acme/bot")));
    assert_eq!(
        resolve(s, "fraud-detector").await,
        Err(ErrorCode::NotFound),
        "a model named through MLflow answers to its MLflow name only"
    );
    assert_eq!(
        resolve(s, "FRAUD DETECTOR").await,
        Err(ErrorCode::NotFound),
        "names are case-sensitive"
    );
    assert_eq!(resolve(s, "ghost").await, Err(ErrorCode::NotFound));

    let before = trail(s).await;
    let refused = |n: &'static str| {
        let store = Arc::clone(&store);
        async move {
            code(
                store
                    .mlflow_create_model(&ctx("alice"), n, NS, String::new(), Tags::new())
                    .await,
            )
        }
    };
    assert_eq!(refused("Fraud Detector").await, ErrorCode::AlreadyExists);
    assert_eq!(
        refused("native").await,
        ErrorCode::AlreadyExists,
        "a native model's plain name is taken"
    );
    assert_eq!(refused("acme/bot").await, ErrorCode::AlreadyExists);
    assert_eq!(refused("").await, ErrorCode::InvalidArgument);
    assert_eq!(refused("   ").await, ErrorCode::InvalidArgument);
    assert_eq!(refused("bad\nname").await, ErrorCode::InvalidArgument);
    let rename = |from: &'static str, to: &'static str| {
        let store = Arc::clone(&store);
        async move { store.mlflow_rename_model(&ctx("bob"), from, to, NS).await }
    };
    assert_eq!(
        code(rename("Fraud Detector", "fraud detector").await),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(rename("Fraud Detector", "native").await),
        ErrorCode::AlreadyExists,
        "a native model would be shadowed"
    );
    assert_eq!(
        code(rename("Fraud Detector", "").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(code(rename("ghost", "Ghost 2").await), ErrorCode::NotFound);
    assert_eq!(trail(s).await, before, "refused changes leave no trace");

    let renamed = rename("Fraud Detector", "Fraud v2").await.expect("rename");
    assert_eq!(renamed.name, "Fraud v2");
    assert_eq!(
        renamed.model.name, "mlflow/fraud-detector",
        "the registry name stays"
    );
    assert_eq!(resolve(s, "Fraud Detector").await, Err(ErrorCode::NotFound));
    assert_eq!(resolve(s, "Fraud v2").await, Ok(fraud.clone()));
    // The freed name can be taken again, by a new model with a new registry name.
    let again = create(s, "Fraud Detector").await;
    assert_eq!(again.to_string(), "mlflow/fraud-detector-3");
    // Renaming to its own name is allowed; a native model renamed answers to the new name only.
    rename("Fraud v2", "Fraud v2").await.expect("rename to itself");
    rename("native", "Native Model")
        .await
        .expect("rename a native model");
    assert_eq!(resolve(s, "native").await, Err(ErrorCode::NotFound));
    assert_eq!(resolve(s, "Native Model").await, Ok(name("mlflow/native")));
    assert_eq!(
        s.mlflow_model("Native Model", NS).await.expect("model").name,
        "Native Model"
    );

    let renames: Vec<_> = all_audit(s)
        .await
        .into_iter()
        .filter(|a| a.action == "model.mlflow_rename")
        .map(|a| (a.actor, a.target))
        .collect();
    assert_eq!(
        renames,
        [
            ("bob".to_owned(), "mlflow/fraud-detector".to_owned()),
            ("bob".to_owned(), "mlflow/fraud-detector".to_owned()),
            ("bob".to_owned(), "mlflow/native".to_owned()),
        ]
    );

    let all: Vec<String> = s
        .mlflow_models(NS)
        .await
        .expect("models")
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        all,
        [
            "Fraud v2",
            "fraud detector",
            "Team A/Churn",
            "Native Model",
            "acme/bot",
            "Fraud Detector"
        ],
        "every model under its MLflow name, oldest first"
    );
    super::assert_audit_matches_events(s).await;
}

/// An MLflow name's namespace depends on the name alone ([`mlflow_namespace`], which the
/// server's authorization uses too): a model is created there, a name resolves only to a model
/// there, and a rename cannot move a model to another namespace (refused, nothing changes).
pub async fn a_name_acts_in_the_namespace_it_names(store: Arc<dyn Store>) {
    use ballast_store::mlflow::mlflow_namespace;
    for (mlflow_name, ns) in [
        ("Fraud", NS),
        ("acme/bot", "acme"),
        ("Acme/Fraud Model", "acme"),
        ("Team A/Churn", "team-a"),
        (".x/Bot", ".x"),
        ("a/b/c", "a"),
        ("/lead", "model"),
    ] {
        assert_eq!(mlflow_namespace(mlflow_name, NS), ns, "{mlflow_name}");
    }
    let s = store.as_ref();
    for mlflow_name in ["Acme/Fraud Model", ".x/Bot", "a/b/c", "Plain"] {
        let m = create(s, mlflow_name).await;
        assert_eq!(m.namespace(), mlflow_namespace(mlflow_name, NS), "{mlflow_name}");
        assert_eq!(resolve(s, mlflow_name).await, Ok(m));
    }
    let before = trail(s).await;
    for (from, to) in [
        ("Acme/Fraud Model", "Fraud Model"),
        ("Acme/Fraud Model", "Other/Fraud Model"),
        ("Plain", "acme/plain"),
    ] {
        let e = s
            .mlflow_rename_model(&ctx("bob"), from, to, NS)
            .await
            .expect_err("a rename across namespaces");
        assert_eq!(
            e.code,
            ErrorCode::InvalidArgument,
            "{from} -> {to}: {}",
            e.message
        );
        assert_eq!(e.field.as_deref(), Some("new_name"));
    }
    assert_eq!(trail(s).await, before, "refused renames leave no trace");
    assert_eq!(resolve(s, "Fraud Model").await, Err(ErrorCode::NotFound));
    let renamed = s
        .mlflow_rename_model(&ctx("bob"), "Acme/Fraud Model", "ACME/Fraud v2", NS)
        .await
        .expect("a rename within the namespace");
    assert_eq!(renamed.model.name, "acme/fraud-model");
    assert_eq!(resolve(s, "ACME/Fraud v2").await, Ok(name("acme/fraud-model")));
}

/// The search index lists every model under its MLflow name, oldest first, with tags and
/// times; a name prefix matches exactly (case-sensitive, `%` and `_` are plain characters,
/// non-ASCII counted by character); a page loads the given models with their versions and
/// skips models deleted since.
pub async fn the_search_index_filters_by_name_prefix(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for n in [
        "Fraud Detector",
        "fraud-scorer",
        "100%_model",
        "1000 models",
        "Modèle Été",
        "Modèles",
    ] {
        create(s, n).await;
    }
    model(s, "mlflow/native", &[("team", "risk")]).await;
    model(s, "acme/bot", &[]).await;
    let names = |prefix: Option<&'static str>| {
        let store = Arc::clone(&store);
        async move {
            store
                .mlflow_model_index(NS, prefix)
                .await
                .expect("index")
                .into_iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(None).await,
        [
            "Fraud Detector",
            "fraud-scorer",
            "100%_model",
            "1000 models",
            "Modèle Été",
            "Modèles",
            "native",
            "acme/bot"
        ]
    );
    assert_eq!(names(Some("Fraud")).await, ["Fraud Detector"]);
    assert_eq!(names(Some("fraud")).await, ["fraud-scorer"]);
    assert_eq!(names(Some("100%")).await, ["100%_model"]);
    assert_eq!(names(Some("10_")).await, Vec::<String>::new());
    assert_eq!(names(Some("100")).await, ["100%_model", "1000 models"]);
    assert_eq!(names(Some("Modè")).await, ["Modèle Été", "Modèles"]);
    assert_eq!(names(Some("Modèle ")).await, ["Modèle Été"]);
    assert_eq!(names(Some("nat")).await, ["native"]);
    assert_eq!(
        names(Some("mlflow/")).await,
        Vec::<String>::new(),
        "the default namespace is not part of the name"
    );
    assert_eq!(names(Some("acme/")).await, ["acme/bot"]);
    assert_eq!(names(Some("")).await.len(), 8);
    assert_eq!(names(Some("zzz")).await, Vec::<String>::new());

    let index = s.mlflow_model_index(NS, Some("nat")).await.expect("index");
    assert_eq!(index[0].model, name("mlflow/native"));
    assert_eq!(
        index[0].tags,
        Tags::from([("team".to_owned(), "risk".to_owned())])
    );
    let native = s.get_model(&name("mlflow/native")).await.expect("model");
    assert_eq!(
        (index[0].created_at.as_str(), index[0].updated_at.as_str()),
        (native.created_at.as_str(), native.updated_at.as_str())
    );

    let fraud = resolve(s, "Fraud Detector").await.expect("resolve");
    mlflow_version(s, &fraud, "r1").await;
    mlflow_version(s, &fraud, "r2").await;
    let entries = s.mlflow_model_index(NS, None).await.expect("index");
    s.delete_model(&ctx("alice"), &name("acme/bot"), Precondition::None)
        .await
        .expect("delete a model without versions");
    let page = s.mlflow_model_page(entries).await.expect("page");
    let shown: Vec<(String, Vec<u64>)> = page
        .iter()
        .map(|(m, vs)| (m.name.clone(), vs.iter().map(|v| v.version.version).collect()))
        .collect();
    assert_eq!(shown.len(), 7, "the deleted model is left out: {shown:?}");
    assert_eq!(shown[0], ("Fraud Detector".to_owned(), vec![1, 2]));
    assert!(shown[1..].iter().all(|(_, vs)| vs.is_empty()));
    assert_eq!(page[0].1[1].info, info("r2"));
    assert_eq!(page[0].0.model.latest_version, 2);
}

/// A version created through MLflow is created, given its files and sealed in one step and
/// keeps MLflow's fields; a native version reads with default fields; the description set
/// afterwards is audited and bumps the revision; aliases resolve to versions in one read.
pub async fn versions_keep_their_mlflow_fields(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = create(s, "Churn Model").await;
    let n1 = mlflow_version(s, &m, "run-1").await;
    let native = sealed(s, &m, &[("auc", 0.9)], &[]).await.version;
    let n3 = mlflow_version(s, &m, "run-3").await;
    assert_eq!(
        (n1, native, n3),
        (1, 2, 3),
        "numbers are shared with native versions"
    );

    let v1 = s.mlflow_version(&m, 1).await.expect("version");
    assert_eq!(v1.version.state, VersionState::Sealed);
    assert!(v1.version.digest.is_some());
    assert_eq!(v1.version.files.len(), 2);
    assert_eq!(v1.version.metadata.description, "from run run-1");
    assert_eq!(v1.version.tags.get("run").map(String::as_str), Some("run-1"));
    assert_eq!(v1.info, info("run-1"));
    assert_eq!(
        s.mlflow_version(&m, 2).await.expect("version").info,
        MlflowVersionInfo::default()
    );
    let all: Vec<(u64, String)> = s
        .mlflow_versions(&m)
        .await
        .expect("versions")
        .into_iter()
        .map(|v| (v.version.version, v.info.run_id))
        .collect();
    assert_eq!(
        all,
        [
            (1, "run-1".to_owned()),
            (2, String::new()),
            (3, "run-3".to_owned())
        ]
    );
    assert_eq!(code(s.mlflow_version(&m, 9).await), ErrorCode::NotFound);
    assert_eq!(
        code(s.mlflow_versions(&name("mlflow/ghost")).await),
        ErrorCode::NotFound
    );

    let revision = v1.version.revision;
    let described = s
        .mlflow_set_version_description(&ctx("bob"), &m, 1, "the good one".into())
        .await
        .expect("describe");
    assert_eq!(described.info.description.as_deref(), Some("the good one"));
    assert_eq!(described.info.run_id, "run-1", "the other fields stay");
    assert_eq!(described.version.revision, revision + 1);
    assert_eq!(
        described.version.metadata.description, "from run run-1",
        "sealed metadata is immutable"
    );
    let described = s
        .mlflow_set_version_description(&ctx("bob"), &m, 2, "native, described".into())
        .await
        .expect("describe a native version");
    assert_eq!(described.info.description.as_deref(), Some("native, described"));
    assert_eq!(described.info.run_id, "");
    assert_eq!(
        code(
            s.mlflow_set_version_description(&ctx("bob"), &m, 9, "x".into())
                .await
        ),
        ErrorCode::NotFound
    );
    let updates = all_audit(s)
        .await
        .into_iter()
        .filter(|a| a.action == "version.update" && a.actor == "bob")
        .map(|a| a.target)
        .collect::<Vec<_>>();
    assert_eq!(updates, ["mlflow/churn-model/1", "mlflow/churn-model/2"]);

    s.set_alias(&ctx("alice"), &m, "champion", 3, Precondition::None)
        .await
        .expect("alias");
    let champion = s
        .mlflow_alias_version("Churn Model", "champion", NS)
        .await
        .expect("alias version")
        .expect("the alias is set");
    assert_eq!(
        (champion.version.version, champion.info.run_id.as_str()),
        (3, "run-3")
    );
    assert!(s
        .mlflow_alias_version("Churn Model", "challenger", NS)
        .await
        .expect("alias version")
        .is_none());
    assert_eq!(
        code(s.mlflow_alias_version("churn-model", "champion", NS).await),
        ErrorCode::NotFound
    );

    // A version that cannot be sealed (a file path outside the version) creates nothing.
    let before = trail(s).await;
    let bad = s
        .mlflow_create_version(
            &ctx("alice"),
            &m,
            NewMlflowVersion {
                files: vec![file("../escape", b"x")],
                info: info("run-bad"),
                ..NewMlflowVersion::default()
            },
        )
        .await;
    assert_eq!(code(bad), ErrorCode::InvalidPath);
    assert_eq!(trail(s).await, before);
    assert_eq!(s.get_model(&m).await.expect("model").latest_version, 3);
    assert_eq!(
        mlflow_version(s, &m, "run-4").await,
        4,
        "the failed create used no number"
    );
    super::assert_audit_matches_events(s).await;
}

/// A multi-step stage move runs every step in one transaction (all or nothing), and
/// `archive_existing` archives the other versions in the final stage.
pub async fn transitions_move_in_one_step_and_archive_the_others(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = create(s, "Ranker").await;
    for run in ["a", "b", "c"] {
        mlflow_version(s, &m, run).await;
    }
    let stage = |n: u64| {
        let store = Arc::clone(&store);
        let m = m.clone();
        async move { store.get_version(&m, n).await.expect("version").stage }
    };
    let v = s
        .mlflow_transition(
            &ctx("alice"),
            &m,
            1,
            vec![Stage::Staging, Stage::Production],
            false,
        )
        .await
        .expect("promote");
    assert_eq!(v.version.stage, Stage::Production);
    assert_eq!(v.info.run_id, "a");
    s.mlflow_transition(&ctx("alice"), &m, 2, vec![Stage::Staging], false)
        .await
        .expect("stage");

    // A path with a forbidden step changes nothing, not even its allowed first steps.
    let before = trail(s).await;
    assert_eq!(
        code(
            s.mlflow_transition(
                &ctx("alice"),
                &m,
                3,
                vec![Stage::Staging, Stage::Development, Stage::Production],
                false
            )
            .await
        ),
        ErrorCode::InvalidTransition
    );
    assert_eq!(stage(3).await, Stage::Development);
    assert_eq!(
        code(
            s.mlflow_transition(&ctx("alice"), &m, 9, vec![Stage::Staging], false)
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(trail(s).await, before);

    s.mlflow_transition(&ctx("alice"), &m, 3, vec![Stage::Staging], true)
        .await
        .expect("stage and archive the other staging versions");
    assert_eq!(
        (stage(1).await, stage(2).await, stage(3).await),
        (Stage::Production, Stage::Archived, Stage::Staging)
    );
    s.mlflow_transition(&ctx("alice"), &m, 3, vec![Stage::Production], true)
        .await
        .expect("promote and archive the previous production version");
    assert_eq!(
        (stage(1).await, stage(2).await, stage(3).await),
        (Stage::Archived, Stage::Archived, Stage::Production)
    );
    assert_eq!(s.get_model(&m).await.expect("model").production_version, Some(3));
    assert_eq!(
        code(s.mlflow_delete_version(&ctx("alice"), &m, 3).await),
        ErrorCode::Conflict,
        "a production version is archived before it is deleted"
    );
    s.mlflow_delete_version(&ctx("alice"), &m, 2)
        .await
        .expect("delete an archived version");
    let left: Vec<u64> = s
        .mlflow_versions(&m)
        .await
        .expect("versions")
        .iter()
        .map(|v| v.version.version)
        .collect();
    assert_eq!(left, [1, 3]);
    super::assert_audit_matches_events(s).await;
}

/// Tracking documents: unique ids per kind (and unique names where named), create-only refuses
/// duplicates, upserts keep the original position, listing is oldest first, reads by id or name,
/// and deletion by id removes the id and everything under `id/` only.
pub async fn tracking_objects_are_unique_and_ordered(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let put = |o: MlflowObject, create_only: bool| {
        let store = Arc::clone(&store);
        async move { store.mlflow_put_object(&ctx("alice"), o, create_only).await }
    };
    let ids = |kind: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .mlflow_objects(kind)
                .await
                .expect("objects")
                .into_iter()
                .map(|o| o.id)
                .collect::<Vec<_>>()
        }
    };
    let e0 = put(object("experiment", "0", Some("Default"), json!({"n": 0})), true)
        .await
        .expect("create");
    assert_eq!((e0.id.as_str(), e0.body["n"].as_i64()), ("0", Some(0)));
    put(object("experiment", "1", Some("fraud"), json!({"n": 1})), true)
        .await
        .expect("create");
    put(object("experiment", "2", None, json!({"n": 2})), true)
        .await
        .expect("create an unnamed one");
    put(object("experiment", "3", None, json!({"n": 3})), true)
        .await
        .expect("several may be unnamed");
    put(object("run", "0", Some("Default"), json!({"run": true})), true)
        .await
        .expect("ids and names are per kind");

    assert_eq!(
        code(put(object("experiment", "0", Some("Other"), json!({})), true).await),
        ErrorCode::AlreadyExists,
        "create-only refuses a taken id"
    );
    assert_eq!(
        code(put(object("experiment", "9", Some("fraud"), json!({})), true).await),
        ErrorCode::AlreadyExists,
        "a taken name is refused"
    );
    assert_eq!(
        code(put(object("experiment", "9", Some("fraud"), json!({})), false).await),
        ErrorCode::AlreadyExists,
        "an upsert cannot take another object's name either"
    );
    assert_eq!(
        code(s.mlflow_get_object("experiment", "9").await),
        ErrorCode::NotFound
    );

    // An upsert of an existing id replaces its document and name and keeps its place.
    put(
        object("experiment", "0", Some("Default (renamed)"), json!({"n": 10})),
        false,
    )
    .await
    .expect("upsert");
    put(object("experiment", "4", Some("Default"), json!({"n": 4})), false)
        .await
        .expect("the freed name can be taken");
    assert_eq!(ids("experiment").await, ["0", "1", "2", "3", "4"]);
    assert_eq!(ids("run").await, ["0"]);
    assert_eq!(ids("logged_model").await, Vec::<String>::new());
    let e0 = s.mlflow_get_object("experiment", "0").await.expect("get");
    assert_eq!(
        (e0.name.as_deref(), e0.body.clone()),
        (Some("Default (renamed)"), json!({"n": 10}))
    );
    let by_name = s
        .mlflow_object_by_name("experiment", "Default")
        .await
        .expect("by name");
    assert_eq!(
        (by_name.id.as_str(), by_name.body.clone()),
        ("4", json!({"n": 4}))
    );
    assert_eq!(
        s.mlflow_object_by_name("run", "Default")
            .await
            .expect("by name")
            .id,
        "0"
    );
    assert_eq!(
        code(s.mlflow_object_by_name("experiment", "default").await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(s.mlflow_object_by_name("experiment", "fraud%").await),
        ErrorCode::NotFound
    );

    for path in [
        "run1",
        "run1/model/MLmodel",
        "run1/model/model.pkl",
        "run10/x",
        "run1_/y",
        "RUN1/z",
    ] {
        put(object("artifact", path, None, json!({ "path": path })), false)
            .await
            .expect("artifact");
    }
    put(object("other", "run1/a", None, json!({})), false)
        .await
        .expect("another kind");
    let delete = |kind: &'static str, id: &'static str| {
        let store = Arc::clone(&store);
        async move { store.mlflow_delete_objects(&ctx("alice"), kind, id).await }
    };
    assert_eq!(delete("artifact", "run1/model/").await.expect("delete"), 2);
    assert_eq!(ids("artifact").await, ["run1", "run10/x", "run1_/y", "RUN1/z"]);
    assert_eq!(delete("artifact", "run1").await.expect("delete"), 1);
    assert_eq!(ids("artifact").await, ["run10/x", "run1_/y", "RUN1/z"]);
    assert_eq!(delete("artifact", "run1").await.expect("delete"), 0);
    assert_eq!(
        delete("artifact", "run1%").await.expect("delete"),
        0,
        "no wildcards"
    );
    assert_eq!(ids("other").await, ["run1/a"], "other kinds are untouched");
    // Deleting all experiments but the last keeps the order of the rest.
    for id in ["1", "2", "3"] {
        assert_eq!(delete("experiment", id).await.expect("delete"), 1);
    }
    put(object("experiment", "5", None, json!({})), true)
        .await
        .expect("create");
    assert_eq!(ids("experiment").await, ["0", "4", "5"]);
}

/// Clients racing to register the same MLflow name get one model (the others `already_exists`,
/// which `register_model` treats as "use it"), and versions registered concurrently get
/// gap-free numbers, each with its own MLflow fields.
pub async fn concurrent_registrations_have_one_winner_and_gap_free_numbers(store: Arc<dyn Store>) {
    let creates: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .mlflow_create_model(
                        &ctx(&format!("client-{i}")),
                        "Shared Model",
                        NS,
                        String::new(),
                        Tags::new(),
                    )
                    .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for c in creates {
        match c.await.expect("task") {
            Ok(m) => won.push(m.model.name),
            Err(e) => assert_eq!(e.code, ErrorCode::AlreadyExists, "{e:?}"),
        }
    }
    assert_eq!(won, ["mlflow/shared-model"], "exactly one create wins");
    assert_eq!(store.mlflow_models(NS).await.expect("models").len(), 1);
    let m = resolve(store.as_ref(), "Shared Model").await.expect("resolve");

    let versions: Vec<_> = (0..12)
        .map(|i| {
            let store = Arc::clone(&store);
            let m = m.clone();
            tokio::spawn(async move { (i, mlflow_version(store.as_ref(), &m, &format!("run-{i}")).await) })
        })
        .collect();
    let mut numbers = Vec::new();
    for v in versions {
        let (i, n) = v.await.expect("task");
        let got = store.mlflow_version(&m, n).await.expect("version");
        assert_eq!(
            got.info,
            info(&format!("run-{i}")),
            "version {n} keeps its own fields"
        );
        numbers.push(n);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=12).collect::<Vec<u64>>());
    super::assert_audit_matches_events(store.as_ref()).await;
}
