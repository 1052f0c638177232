"""Ballast's MLflow compatibility, checked with the real `mlflow` client.

Run against a server given by MLFLOW_TRACKING_URI (tests/mlflow/run.sh starts one). The same
suite is meant to pass against MLflow's own server wherever behaviour should match; checks of
Ballast-only guarantees (sealed manifests, lineage in version metadata) are skipped there
(BALLAST_NATIVE_URL unset).
"""

import json
import os
import urllib.request
import uuid

import mlflow
import mlflow.pyfunc
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

NATIVE = os.environ.get("BALLAST_NATIVE_URL")  # e.g. http://127.0.0.1:PORT


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def native(path):
    with urllib.request.urlopen(f"{NATIVE}{path}") as r:
        return json.load(r)


class AddN(mlflow.pyfunc.PythonModel):
    def __init__(self, n):
        self.n = n

    def predict(self, context, model_input, params=None):
        return model_input.apply(lambda col: col + self.n)


@pytest.fixture(scope="module")
def client():
    assert os.environ.get("MLFLOW_TRACKING_URI"), "set MLFLOW_TRACKING_URI"
    return MlflowClient()


def test_log_model_register_and_load(client):
    import pandas as pd

    name = unique("Flow Model")  # not a valid Ballast name: mapped, and answered as given
    mlflow.set_experiment(unique("exp"))
    with mlflow.start_run() as run:
        mlflow.log_param("lr", "0.01")
        mlflow.log_metric("accuracy", 0.91)
        mlflow.log_metric("accuracy", 0.93, step=1)
        info = mlflow.pyfunc.log_model(name="model", python_model=AddN(2), registered_model_name=name)
    mv = client.get_model_version(name, "1")
    assert mv.name == name
    assert mv.status == "READY"
    assert mv.run_id == run.info.run_id
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    out = loaded.predict(pd.DataFrame({"x": [1, 2]}))
    assert list(out["x"]) == [3, 4]

    # register_model from the run: a second version of the same model
    mv2 = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    assert mv2.version == "2"
    client.set_registered_model_alias(name, "champion", "2")
    by_alias = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert list(by_alias.predict(pd.DataFrame({"x": [10]}))["x"]) == [12]
    assert info.model_uri

    if NATIVE:
        # The versions are sealed Ballast versions carrying the run's lineage.
        found = [m for m in native("/v1/models?limit=1000")["models"] if m["latest_version"] == 2]
        v = None
        for m in found:
            cand = native(f"/v1/models/{m['name']}/versions/1")
            if cand["metadata"].get("lineage", {}).get("source_run_id") == run.info.run_id:
                v = cand
        assert v is not None, "version 1 not found natively"
        assert v["state"] == "sealed" and len(v["digest"]) == 64
        assert any(f["path"].endswith("MLmodel") for f in v["files"])
        assert v["metadata"]["metrics"]["accuracy"] == 0.93
        assert v["metadata"]["hyperparameters"]["lr"] == "0.01"
        assert v["metadata"]["lineage"]["source_experiment_id"] == run.info.experiment_id


def test_models_crud_search_and_errors(client):
    base = unique("crud")
    names = [f"{base}-{i}" for i in range(5)]
    for n in names:
        client.create_registered_model(n, tags={"team": "search", "idx": n[-1]}, description="d")
    got = client.get_registered_model(names[0])
    assert got.name == names[0] and got.description == "d" and got.tags["team"] == "search"

    with pytest.raises(MlflowException) as e:
        client.create_registered_model(names[0])
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as e:
        client.get_registered_model(unique("missing"))
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as e:
        client.search_registered_models(filter_string="name = ")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"

    hits = client.search_registered_models(filter_string=f"name LIKE '{base}-%'", order_by=["name DESC"])
    assert [m.name for m in hits] == sorted(names, reverse=True)
    hits = client.search_registered_models(filter_string=f"name ILIKE '{base.upper()}-%' AND tags.idx = '3'")
    assert [m.name for m in hits] == [names[3]]
    hits = client.search_registered_models(filter_string=f"name LIKE '{base}-%' AND tags.`team` != 'x'")
    assert len(hits) == 5

    page1 = client.search_registered_models(filter_string=f"name LIKE '{base}-%'", max_results=2)
    assert len(page1) == 2 and page1.token
    page2 = client.search_registered_models(filter_string=f"name LIKE '{base}-%'", max_results=2, page_token=page1.token)
    assert [m.name for m in page2] == names[2:4]

    client.update_registered_model(names[1], description="new")
    assert client.get_registered_model(names[1]).description == "new"
    client.set_registered_model_tag(names[1], "k", "v")
    assert client.get_registered_model(names[1]).tags["k"] == "v"
    client.delete_registered_model_tag(names[1], "k")
    assert "k" not in client.get_registered_model(names[1]).tags

    client.rename_registered_model(names[2], names[2] + "-renamed")
    assert client.get_registered_model(names[2] + "-renamed").name == names[2] + "-renamed"
    with pytest.raises(MlflowException):
        client.get_registered_model(names[2])
    client.delete_registered_model(names[4])
    with pytest.raises(MlflowException) as e:
        client.get_registered_model(names[4])
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def _register(client, name, n):
    with mlflow.start_run() as run:
        mlflow.log_metric("score", float(n))
        mlflow.pyfunc.log_model(name="model", python_model=AddN(n), registered_model_name=name)
    return run.info.run_id


def test_versions_tags_aliases_stages(client):
    name = unique("stages")
    mlflow.set_experiment(unique("exp"))
    runs = [_register(client, name, n) for n in (1, 2, 3)]

    client.set_model_version_tag(name, "1", "validated", "yes")
    assert client.get_model_version(name, "1").tags["validated"] == "yes"
    client.delete_model_version_tag(name, "1", "validated")
    assert "validated" not in client.get_model_version(name, "1").tags

    client.update_model_version(name, "1", description="first")
    assert client.get_model_version(name, "1").description == "first"

    client.set_registered_model_alias(name, "champion", "1")
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    client.set_registered_model_alias(name, "champion", "2")
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_registered_model(name).aliases == {"champion": "2"}
    client.delete_registered_model_alias(name, "champion")
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, "champion")

    mv = client.transition_model_version_stage(name, "1", "Production")
    assert mv.current_stage == "Production"
    mv = client.transition_model_version_stage(name, "2", "Production")
    assert client.get_model_version(name, "2").current_stage == "Production"
    client.transition_model_version_stage(name, "3", "Staging")
    latest = {v.current_stage: v.version for v in client.get_latest_versions(name)}
    assert latest["Production"] == "2" and latest["Staging"] == "3"
    assert [v.version for v in client.get_latest_versions(name, stages=["Staging"])] == ["3"]
    client.transition_model_version_stage(name, "1", "Staging", archive_existing_versions=True)
    assert client.get_model_version(name, "3").current_stage == "Archived"

    found = client.search_model_versions(f"name = '{name}'")
    assert sorted(v.version for v in found) == ["1", "2", "3"]
    found = client.search_model_versions(f"name = '{name}' AND run_id = '{runs[1]}'")
    assert [v.version for v in found] == ["2"]
    found = client.search_model_versions(f"run_id IN ('{runs[0]}', '{runs[2]}')")
    assert sorted(v.version for v in found) == ["1", "3"]
    client.set_model_version_tag(name, "3", "candidate", "yes")
    found = client.search_model_versions(f"name = '{name}' AND tags.candidate = 'yes'")
    assert [v.version for v in found] == ["3"]
    page1 = client.search_model_versions(f"name = '{name}'", max_results=2, order_by=["version_number ASC"])
    assert [v.version for v in page1] == ["1", "2"] and page1.token
    page2 = client.search_model_versions(
        f"name = '{name}'", max_results=2, order_by=["version_number ASC"], page_token=page1.token
    )
    assert [v.version for v in page2] == ["3"]
    uri = client.get_model_version_download_uri(name, "2")
    assert uri.startswith("mlflow-artifacts:")

    with pytest.raises(MlflowException) as e:
        client.get_model_version(name, "99")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.transition_model_version_stage(name, "3", "None")
    client.delete_model_version(name, "3")
    with pytest.raises(MlflowException):
        client.get_model_version(name, "3")


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
