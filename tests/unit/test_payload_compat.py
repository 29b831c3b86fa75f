"""Payloads survive a rolling deploy: a field a newer Colony added is accepted, never an error.

Walks the argument and return types of every workflow (run, signals, queries, updates)
and every activity, down through every nested model, and decodes each with an unknown
field added, everywhere it can go, through the data converter every worker uses.
"""

import json
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Union, cast

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.api.common.v1 import Payload

from core.db import Pool
from core.runs.payloads import AgentLimits, AgentSpec, MemorySettings, RunPlan
from core.specs import Spec
from core.swarms.plan import SwarmLimits
from core.temporal import DATA_CONVERTER
from core.tools.payloads import ToolPolicy
from tests.conftest import make_settings
from workers.registry import ALL_WORKFLOWS, LANES, Resources


def handlers(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Every workflow handler and activity function."""
    for cls in ALL_WORKFLOWS:
        defn = workflow._Definition.must_from_class(cls)
        yield defn.run_fn
        for group in (defn.signals, defn.queries, defn.updates):
            yield from (handler.fn for handler in group.values() if handler.fn is not None)
    resources = Resources(make_settings(COLONY_DATA_DIR=str(tmp_path)), cast(Pool, None))
    for lane in LANES.values():
        if lane.activities is not None:
            yield from lane.activities(resources)


def models_in(hint: Any, seen: set[type[BaseModel]]) -> None:
    """Every pydantic model reachable from a type hint, into `seen`."""
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        if hint in seen:
            return
        seen.add(hint)
        for field in hint.model_fields.values():
            models_in(field.annotation, seen)
        return
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType) or origin is not None:
        for arg in typing.get_args(hint):
            models_in(arg, seen)


@pytest.fixture(scope="module")
def payload_models(tmp_path_factory: pytest.TempPathFactory) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    for fn in handlers(tmp_path_factory.mktemp("data")):
        for hint in typing.get_type_hints(fn).values():
            models_in(hint, seen)
    return seen


def test_the_walk_finds_the_nested_specs(payload_models: set[type[BaseModel]]) -> None:
    assert {RunPlan, AgentLimits, MemorySettings, ToolPolicy, SwarmLimits} <= payload_models
    assert len(payload_models) > 60


def test_no_payload_model_rejects_unknown_fields(payload_models: set[type[BaseModel]]) -> None:
    strict = [
        m.__name__
        for m in payload_models
        if m.model_config.get("extra") == "forbid" and not issubclass(m, Spec)
    ]
    assert strict == [], f"these payload models reject fields a newer version adds: {strict}"


def decode(value: Any, hint: Any) -> Any:
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())
    return DATA_CONVERTER.payload_converter.from_payloads([payload], [hint])[0]


def test_every_model_with_defaults_decodes_with_an_unknown_field(
    payload_models: set[type[BaseModel]],
) -> None:
    decoded = 0
    for model in payload_models:
        try:
            instance = model()
        except Exception:  # required fields: covered by the nested case below
            continue
        data = {**instance.model_dump(mode="json"), "field_from_the_future": 1}
        assert decode(data, model) == instance, model.__name__
        decoded += 1
    assert decoded > 10


def test_a_nested_spec_with_an_unknown_field_decodes() -> None:
    """A new limit in an agent's spec (its `AgentLimits` ride in `RunPlan`) is dropped."""
    spec = AgentSpec(model="local/smollm2-135m", instructions="Be brief.")
    data = spec.model_dump(mode="json")
    data["limits"]["max_dreams"] = 3
    data["memory"]["future_setting"] = True
    data["new_top_level"] = "x"
    assert decode(data, AgentSpec) == spec
    # Outside payloads a typo is still an error.
    with pytest.raises(ValueError, match="max_dreams"):
        AgentSpec.model_validate(data)
