"""Ballast's MLflow compatibility, checked with the real `mlflow` client.

Run against a server given by MLFLOW_TRACKING_URI: tests/mlflow/run.sh starts a Ballast server,
tests/mlflow/run-reference.sh starts MLflow's own server, and `.ci/run` runs both, so every test
not marked otherwise is known to pass against MLflow itself: the suite describes MLflow
truthfully.

Two kinds of tests run against Ballast only (BALLAST_NATIVE_URL set), each skipped against
MLflow's server with its reason:
- `ballast_only`: Ballast guarantees MLflow's server does not offer (sealed manifests, lineage in
  version metadata, native versions seen through MLflow, unverified external sources);
- `intentional_difference(...)`: places where Ballast deliberately answers differently from
  MLflow's server (one production version at a time, no deleting what is in production, stricter
  alias and tag names). Each is documented in docs/mlflow.md.

With token authentication, MLFLOW_TRACKING_TOKEN holds the token: the MLflow client sends it as
`Authorization: Bearer`, and so do the native calls here.
"""

import hashlib
import json
import os
import time
import urllib.request
import uuid

import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

NATIVE = os.environ.get("BALLAST_NATIVE_URL")  # e.g. http://127.0.0.1:PORT
TOKEN = os.environ.get("MLFLOW_TRACKING_TOKEN")

ballast_only = pytest.mark.skipif(
    not NATIVE,
    reason="Ballast-only: checks a guarantee MLflow's server does not offer (BALLAST_NATIVE_URL unset)",
)


def intentional_difference(why):
    return pytest.mark.skipif(
        not NATIVE,
        reason=f"intentional difference from MLflow's server, documented in docs/mlflow.md: {why}",
    )


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def native(path, method="GET", body=None, headers=None):
    """A call to Ballast's native API (JSON in and out)."""
    data = None
    hdrs = dict(headers or {})
    if TOKEN:
        hdrs["Authorization"] = f"Bearer {TOKEN}"
    if isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    elif body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(f"{NATIVE}{path}", data=data, method=method, headers=hdrs)
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else None


def native_model_of(mlflow_name):
    """The native model an MLflow name maps to (searched by its MLflow-visible name)."""
    for m in native("/v1/models?limit=1000")["models"]:
        if m["name"].split("/", 1)[1] == mlflow_name or m["name"] == mlflow_name:
            return m
    slug = mlflow_name.lower().replace(" ", "-")
    for m in native("/v1/models?limit=1000")["models"]:
        if m["name"].split("/", 1)[1] == slug:
            return m
    raise AssertionError(f"no native model for {mlflow_name!r}")


class AddN(mlflow.pyfunc.PythonModel):
    def __init__(self, n):
        self.n = n

    def predict(self, context, model_input, params=None):
        return model_input.apply(lambda col: col + self.n)


@pytest.fixture(scope="module")
def client():
    assert os.environ.get("MLFLOW_TRACKING_URI"), "set MLFLOW_TRACKING_URI"
    return MlflowClient()


@pytest.fixture(scope="module")
def flow(client):
    """The canonical MLflow flow: a run logs a param and metrics, logs a pyfunc model that
    registers version 1, then `register_model("runs:/…")` registers version 2."""
    name = unique("Flow Model")  # not a valid Ballast name: mapped, and answered as given
    mlflow.set_experiment(unique("exp"))
    with mlflow.start_run() as run:
        mlflow.log_param("lr", "0.01")
        mlflow.log_metric("accuracy", 0.91)
        mlflow.log_metric("accuracy", 0.93, step=1)
        info = mlflow.pyfunc.log_model(name="model", python_model=AddN(2), registered_model_name=name)
    mv2 = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    return {"name": name, "run": run, "info": info, "mv2": mv2}


def test_canonical_flow_registers_and_loads(client, flow):
    name, run = flow["name"], flow["run"]
    assert flow["info"].model_uri
    mv = client.get_model_version(name, "1")
    assert mv.name == name
    assert mv.status == "READY"
    assert mv.run_id == run.info.run_id
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    assert list(loaded.predict(pd.DataFrame({"x": [1, 2]}))["x"]) == [3, 4]

    assert flow["mv2"].version == "2"
    assert flow["mv2"].run_id == run.info.run_id
    client.set_registered_model_alias(name, "champion", "2")
    by_alias = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert list(by_alias.predict(pd.DataFrame({"x": [10]}))["x"]) == [12]
    # `latest` is reserved: it resolves to the highest version.
    assert client.get_model_version_by_alias(name, "latest").version == "2"
    assert client.get_registered_model(name).aliases == {"champion": "2"}


@ballast_only
def test_canonical_flow_versions_are_sealed_with_lineage(client, flow):
    name, run = flow["name"], flow["run"]
    model = native_model_of(name)
    assert model["latest_version"] == 2
    v = native(f"/v1/models/{model['name']}/versions/1")
    assert v["state"] == "sealed" and len(v["digest"]) == 64
    assert any(f["path"].endswith("MLmodel") for f in v["files"])
    assert all(len(f["sha256"]) == 64 for f in v["files"])
    assert v["metadata"]["metrics"]["accuracy"] == 0.93
    assert v["metadata"]["hyperparameters"]["lr"] == "0.01"
    assert v["metadata"]["lineage"]["source_run_id"] == run.info.run_id
    assert v["metadata"]["lineage"]["source_experiment_id"] == run.info.experiment_id
    assert v["tags"]["ballast.source_verified"] == "true"
    # The alias set through MLflow is Ballast's alias.
    assert native(f"/v1/models/{model['name']}/aliases/champion")["version"] == 2


def test_models_crud_search_and_errors(client):
    base = unique("crud")
    names = [f"{base}-{i}" for i in range(5)]
    for n in names:
        client.create_registered_model(n, tags={"team": "search", "idx": n[-1]}, description="d")
    got = client.get_registered_model(names[0])
    assert got.name == names[0] and got.description == "d" and got.tags["team"] == "search"

    # Error cases: duplicate name, missing model, bad filters and arguments.
    with pytest.raises(MlflowException) as e:
        client.create_registered_model(names[0])
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as e:
        client.get_registered_model(unique("missing"))
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as e:
        client.delete_registered_model(unique("missing"))
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as e:
        client.update_registered_model(unique("missing"), description="x")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    for bad in ["name = ", "name LIKE", "nosuchattr = 'x'", "name = 'a' OR name = 'b'"]:
        with pytest.raises(MlflowException) as e:
            client.search_registered_models(filter_string=bad)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE", bad
    with pytest.raises(MlflowException) as e:
        client.search_registered_models(order_by=["nosuchkey DESC"])
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as e:
        client.search_registered_models(max_results=1001)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"

    # Filters and ordering.
    hits = client.search_registered_models(filter_string=f"name LIKE '{base}-%'", order_by=["name DESC"])
    assert [m.name for m in hits] == sorted(names, reverse=True)
    hits = client.search_registered_models(filter_string=f"name ILIKE '{base.upper()}-%' AND tags.idx = '3'")
    assert [m.name for m in hits] == [names[3]]
    hits = client.search_registered_models(filter_string=f"name LIKE '{base}-%' AND tags.`team` != 'x'")
    assert len(hits) == 5
    hits = client.search_registered_models(filter_string=f"name = '{names[2]}'")
    assert [m.name for m in hits] == [names[2]]
    hits = client.search_registered_models(filter_string=f"name LIKE '{base}-%' AND tags.idx LIKE '%4'")
    assert [m.name for m in hits] == [names[4]]

    # Paging: default order is by name; tokens walk every page exactly once.
    page1 = client.search_registered_models(filter_string=f"name LIKE '{base}-%'", max_results=2)
    assert [m.name for m in page1] == names[:2] and page1.token
    page2 = client.search_registered_models(filter_string=f"name LIKE '{base}-%'", max_results=2, page_token=page1.token)
    assert [m.name for m in page2] == names[2:4] and page2.token
    page3 = client.search_registered_models(filter_string=f"name LIKE '{base}-%'", max_results=2, page_token=page2.token)
    assert [m.name for m in page3] == names[4:] and not page3.token

    # Updates, tags (deleting a tag that is not set is not an error, as in MLflow).
    client.update_registered_model(names[1], description="new")
    assert client.get_registered_model(names[1]).description == "new"
    client.set_registered_model_tag(names[1], "k", "v")
    assert client.get_registered_model(names[1]).tags["k"] == "v"
    client.delete_registered_model_tag(names[1], "k")
    assert "k" not in client.get_registered_model(names[1]).tags
    client.delete_registered_model_tag(names[1], "k")

    # Ordering by last update: the model touched last comes first.
    time.sleep(0.05)
    client.update_registered_model(names[3], description="touched last")
    hits = client.search_registered_models(
        filter_string=f"name LIKE '{base}-%'", order_by=["last_updated_timestamp DESC"]
    )
    assert hits[0].name == names[3]

    # Rename: the new name resolves, the old one does not; a taken name is refused.
    client.rename_registered_model(names[2], names[2] + "-renamed")
    assert client.get_registered_model(names[2] + "-renamed").name == names[2] + "-renamed"
    with pytest.raises(MlflowException) as e:
        client.get_registered_model(names[2])
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as e:
        client.rename_registered_model(names[3], names[0])
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert client.get_registered_model(names[3]).name == names[3]

    client.delete_registered_model(names[4])
    with pytest.raises(MlflowException) as e:
        client.get_registered_model(names[4])
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    hits = client.search_registered_models(filter_string=f"name LIKE '{base}-%'")
    assert sorted(m.name for m in hits) == sorted([names[0], names[1], names[2] + "-renamed", names[3]])


def _register(name, n):
    with mlflow.start_run() as run:
        mlflow.log_metric("score", float(n))
        mlflow.pyfunc.log_model(name="model", python_model=AddN(n), registered_model_name=name)
    return run.info.run_id


def test_versions_tags_aliases_stages(client):
    name = unique("stages")
    mlflow.set_experiment(unique("exp"))
    runs = [_register(name, n) for n in (1, 2, 3)]

    client.set_model_version_tag(name, "1", "validated", "yes")
    assert client.get_model_version(name, "1").tags["validated"] == "yes"
    client.delete_model_version_tag(name, "1", "validated")
    assert "validated" not in client.get_model_version(name, "1").tags
    client.delete_model_version_tag(name, "1", "validated")  # not set: not an error

    client.update_model_version(name, "1", description="first")
    assert client.get_model_version(name, "1").description == "first"

    # Aliases.
    client.set_registered_model_alias(name, "champion", "1")
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    client.set_registered_model_alias(name, "champion", "2")
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version_by_alias(name, "champion").aliases == ["champion"]
    assert client.get_registered_model(name).aliases == {"champion": "2"}
    assert client.get_model_version_by_alias(name, "latest").version == "3"
    client.delete_registered_model_alias(name, "champion")
    with pytest.raises(MlflowException) as e:
        client.get_model_version_by_alias(name, "champion")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"  # MLflow's code for an unset alias
    client.delete_registered_model_alias(name, "champion")  # not set: not an error
    with pytest.raises(MlflowException) as e:
        client.set_registered_model_alias(name, "champion", "99")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    for reserved in ["latest", "v2"]:
        with pytest.raises(MlflowException) as e:
            client.set_registered_model_alias(name, reserved, "1")
        assert e.value.error_code == "INVALID_PARAMETER_VALUE", reserved

    # Stages.
    mv = client.transition_model_version_stage(name, "1", "Production")
    assert mv.current_stage == "Production"
    client.transition_model_version_stage(name, "2", "Production")
    assert client.get_model_version(name, "2").current_stage == "Production"
    client.transition_model_version_stage(name, "3", "Staging")
    latest = {v.current_stage: v.version for v in client.get_latest_versions(name)}
    assert latest["Production"] == "2" and latest["Staging"] == "3"
    assert [v.version for v in client.get_latest_versions(name, stages=["Staging"])] == ["3"]
    client.transition_model_version_stage(name, "1", "Staging", archive_existing_versions=True)
    assert client.get_model_version(name, "3").current_stage == "Archived"
    assert client.get_model_version(name, "1").current_stage == "Staging"
    with pytest.raises(MlflowException) as e:
        client.transition_model_version_stage(name, "1", "Prod")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException):
        # Only moves into Staging or Production can archive the others (MLflow answers this
        # with a 500, Ballast with INVALID_PARAMETER_VALUE: both refuse it).
        client.transition_model_version_stage(name, "3", "None", archive_existing_versions=True)
    assert client.get_model_version(name, "3").current_stage == "Archived"

    # Searches: filters, ordering, paging, errors.
    found = client.search_model_versions(f"name = '{name}'")
    assert sorted(v.version for v in found) == ["1", "2", "3"]
    found = client.search_model_versions(f"name = '{name}' AND run_id = '{runs[1]}'")
    assert [v.version for v in found] == ["2"]
    found = client.search_model_versions(f"run_id IN ('{runs[0]}', '{runs[2]}')")
    assert sorted(v.version for v in found) == ["1", "3"]
    found = client.search_model_versions(f"name = '{name}' AND version_number = 2")
    assert [v.version for v in found] == ["2"]
    client.set_model_version_tag(name, "3", "candidate", "yes")
    found = client.search_model_versions(f"name = '{name}' AND tags.candidate = 'yes'")
    assert [v.version for v in found] == ["3"]
    found = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])
    assert [v.version for v in found] == ["3", "2", "1"]
    page1 = client.search_model_versions(f"name = '{name}'", max_results=2, order_by=["version_number ASC"])
    assert [v.version for v in page1] == ["1", "2"] and page1.token
    page2 = client.search_model_versions(
        f"name = '{name}'", max_results=2, order_by=["version_number ASC"], page_token=page1.token
    )
    assert [v.version for v in page2] == ["3"] and not page2.token
    assert client.search_model_versions(f"name = '{unique('missing')}'") == []
    for bad in ["name = ", "nosuchattr = 'x'", "name = 'a' OR name = 'b'"]:
        with pytest.raises(MlflowException) as e:
            client.search_model_versions(bad)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE", bad
    with pytest.raises(MlflowException) as e:
        client.search_model_versions(f"name = '{name}'", order_by=["nosuchkey"])
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"

    uri = client.get_model_version_download_uri(name, "2")
    assert uri.startswith("mlflow-artifacts:")

    with pytest.raises(MlflowException) as e:
        client.get_model_version(name, "99")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as e:
        client.get_model_version(unique("missing"), "1")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as e:
        client.get_model_version(name, "abc")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"

    # Delete a version: it and its aliases go; the others stay.
    client.set_registered_model_alias(name, "old", "3")
    client.transition_model_version_stage(name, "3", "None")
    client.delete_model_version(name, "3")
    with pytest.raises(MlflowException) as e:
        client.get_model_version(name, "3")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert "old" not in client.get_registered_model(name).aliases
    assert sorted(v.version for v in client.search_model_versions(f"name = '{name}'")) == ["1", "2"]
    assert client.get_model_version_by_alias(name, "latest").version == "2"


def test_create_model_version_directly(client):
    name = unique("direct")
    client.create_registered_model(name)
    with mlflow.start_run() as run:
        mlflow.log_param("depth", "4")
    mv = client.create_model_version(name, "s3://elsewhere/model", run_id=run.info.run_id, tags={"t": "1"})
    assert mv.version == "1" and mv.status == "READY" and mv.tags == {"t": "1"}
    assert mv.source == "s3://elsewhere/model"
    client.set_registered_model_alias(name, "candidate", "1")
    assert client.get_model_version_by_alias(name, "candidate").version == "1"
    with pytest.raises(MlflowException) as e:
        client.create_model_version(unique("missing"), "s3://elsewhere/model", run_id=run.info.run_id)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


@ballast_only
def test_external_source_is_sealed_as_unverified(client):
    name = unique("external")
    client.create_registered_model(name)
    with mlflow.start_run() as run:
        mlflow.log_param("depth", "4")
        mlflow.log_metric("auc", 0.8)
    mv = client.create_model_version(name, "s3://elsewhere/model", run_id=run.info.run_id)
    assert "unverified" in (mv.status_message or "")
    assert "ballast.source_verified" not in mv.tags  # reserved tags stay out of MLflow's view
    model = native_model_of(name)
    v = native(f"/v1/models/{model['name']}/versions/1")
    assert v["state"] == "sealed"
    assert v["tags"]["ballast.source_verified"] == "false"
    assert [f["path"] for f in v["files"]] == ["ballast-external-source.json"]
    assert v["metadata"]["hyperparameters"]["depth"] == "4"
    assert v["metadata"]["metrics"]["auc"] == 0.8


@ballast_only
def test_native_versions_are_visible_through_mlflow(client):
    model = unique("native")
    native("/v1/models", "POST", {"name": f"mlflow/{model}", "description": "made natively"})
    v = native(f"/v1/models/mlflow/{model}/versions", "POST", {"metadata": {"description": "native v1"}})
    body = b'{"weights": [1, 2, 3]}\n'
    native(
        f"/v1/models/mlflow/{model}/versions/{v['version']}/files/weights.json",
        "PUT",
        body,
        {"x-ballast-sha256": hashlib.sha256(body).hexdigest(), "Content-Type": "application/octet-stream"},
    )
    native(f"/v1/models/mlflow/{model}/versions/{v['version']}/seal", "POST", {})
    native(f"/v1/models/mlflow/{model}/aliases/prod-candidate", "PUT", {"version": v["version"]})

    rm = client.get_registered_model(model)
    assert rm.name == model and rm.description == "made natively"
    assert rm.aliases == {"prod-candidate": "1"}
    mv = client.get_model_version_by_alias(model, "prod-candidate")
    assert mv.version == "1" and mv.status == "READY" and mv.current_stage == "None"
    assert [m.name for m in client.search_registered_models(filter_string=f"name = '{model}'")] == [model]
    # A stage move through MLflow is a native stage move.
    client.transition_model_version_stage(model, "1", "Staging")
    assert native(f"/v1/models/mlflow/{model}/versions/1")["stage"] == "staging"


@intentional_difference("Ballast keeps one production version: promoting another archives it")
def test_promotion_archives_the_previous_production_version(client):
    name = unique("promote")
    mlflow.set_experiment(unique("exp"))
    _register(name, 1)
    _register(name, 2)
    client.transition_model_version_stage(name, "1", "Production")
    client.transition_model_version_stage(name, "2", "Production")
    assert client.get_model_version(name, "1").current_stage == "Archived"
    assert [v.version for v in client.get_latest_versions(name, stages=["Production"])] == ["2"]


@intentional_difference("what is in staging or production must be archived before it is deleted")
def test_deleting_what_is_in_production_is_refused(client):
    name = unique("guarded")
    mlflow.set_experiment(unique("exp"))
    _register(name, 1)
    client.transition_model_version_stage(name, "1", "Production")
    with pytest.raises(MlflowException) as e:
        client.delete_model_version(name, "1")
    assert e.value.error_code == "INVALID_STATE"
    with pytest.raises(MlflowException) as e:
        client.delete_registered_model(name)
    assert e.value.error_code == "INVALID_STATE"
    assert client.get_model_version(name, "1").current_stage == "Production"
    client.transition_model_version_stage(name, "1", "Archived")
    client.delete_registered_model(name)
    with pytest.raises(MlflowException) as e:
        client.get_registered_model(name)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


@intentional_difference("alias names and tag keys follow Ballast's rules (lowercase aliases; no spaces in keys)")
def test_alias_and_tag_names_follow_ballast_rules(client):
    name = unique("names")
    client.create_registered_model(name)
    with mlflow.start_run() as run:
        pass
    client.create_model_version(name, "s3://elsewhere/model", run_id=run.info.run_id)
    with pytest.raises(MlflowException) as e:
        client.set_registered_model_alias(name, "Champion", "1")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as e:
        client.set_registered_model_tag(name, "my key", "v")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert client.get_registered_model(name).tags == {}
    assert client.get_registered_model(name).aliases == {}
