"""A version's training batches: in its tag while short, in its run's artifact once a year of hourly feed
pushes would pass MLflow's 100,000-character cap on a tag."""

from __future__ import annotations

import json
import uuid

import model_registry
from model_registry import Tag


def version_with(client, batch_ids: list[str]) -> tuple[str, str]:
    """A registered version whose run holds `batch_ids` as training records them; (name, version)."""
    name = f"batches_{uuid.uuid4().hex[:8]}"
    experiment = client.create_experiment(name)
    run_id = client.create_run(experiment).info.run_id
    value, as_artifact = model_registry.training_batches_tag(batch_ids)
    if as_artifact:
        client.log_dict(run_id, batch_ids, model_registry.BATCHES_ARTIFACT)
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"{client.get_run(run_id).info.artifact_uri}/model", run_id=run_id,
                                     tags={Tag.TRAINING_BATCHES: value})
    return name, str(mv.version)


def test_a_short_list_stays_in_the_tag_and_a_year_of_hourly_pushes_goes_to_the_artifact(mlflow_uri):
    client = model_registry.client(mlflow_uri)
    landing = ["20130301T000000-ab12cd"]
    name, version = version_with(client, landing)
    assert json.loads(client.get_model_version(name, version).tags[Tag.TRAINING_BATCHES]) == landing
    assert model_registry.training_batches(client, name, version) == landing

    year = landing + [f"feed_outcomes__2013{d // 24 // 28 + 1:02d}{d // 24 % 28 + 1:02d}T{d % 24:02d}00__{d:08x}"
                      for d in range(24 * 365)]
    assert len(json.dumps(year)) > 100_000  # would not fit in a tag at all
    name, version = version_with(client, year)
    tag = json.loads(client.get_model_version(name, version).tags[Tag.TRAINING_BATCHES])
    assert tag == {"artifact": model_registry.BATCHES_ARTIFACT, "count": len(year), "first": year[0],
                   "last": year[-1]}
    assert model_registry.training_batches(client, name, version) == year
