"""The runtime config classes: generated from the config models (and kept in step with
them), frozen, and what a thawed config is made of."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backhaul.config import load_file
from backhaul.config.runtime_schema import models, render
from backhaul.edge import runtime_config
from backhaul.edge.balancing import balance_settings, retry_policy, route_retry_policy
from backhaul.edge.settings import freeze, thaw
from backhaul.state.record import FrozenRecordError, Record

EXAMPLE = Path(__file__).parents[2] / "examples" / "edge.yaml"
GENERATED = Path(runtime_config.__file__)


def test_the_generated_module_matches_the_models() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    formatted = subprocess.run(
        [ruff, "format", "--stdin-filename", "runtime_config.py", "-"],
        input=render(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert formatted == GENERATED.read_text(), (
        "src/backhaul/edge/runtime_config.py is out of date: run `python -m "
        "backhaul.config.runtime_schema | ruff format - > src/backhaul/edge/runtime_config.py`"
    )


def test_every_model_has_its_frozen_class_with_the_same_fields() -> None:
    for model in models():
        cls = runtime_config.CLASSES[model.__name__]
        assert issubclass(cls, Record), model
        assert set(model.model_fields) - {"dhcp"} == set(cls.__slots__), model


def test_a_thawed_config_is_runtime_objects_all_the_way_down() -> None:
    config = thaw(freeze(load_file(EXAMPLE)))
    seen = 0

    def walk(value: object) -> None:
        nonlocal seen
        if isinstance(value, Record):
            if type(value).__module__ == runtime_config.__name__:
                seen += 1
            for field in value.as_dict().values():
                walk(field)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, tuple):
            for item in value:
                walk(item)
        else:
            assert isinstance(value, int | float | str | bytes | frozenset) or value is None, value

    walk(config)
    assert seen > 50
    with pytest.raises(FrozenRecordError):
        config.listeners[0].name = "other"  # type: ignore[misc]
    assert config == thaw(freeze(load_file(EXAMPLE)))  # compared by value
    api = config.clusters["api"]
    assert balance_settings(api).policy == "least_request"
    assert retry_policy(api.retries).max_retries == api.retries.max_retries
    route = config.routes[1]
    assert route.proxy is not None
    assert route_retry_policy(route.proxy, config.clusters[route.proxy.cluster]).non_idempotent
    assert not hasattr(config, "dhcp")


def test_a_thawed_config_needs_no_policy_package() -> None:
    """Unpickling the runtime config imports neither pydantic nor the balance package (the
    supervisor stays small: the balance package brings OpenSSL's libcrypto with hashlib)."""
    code = (
        "import sys; from backhaul.edge.settings import thaw; thaw(sys.stdin.buffer.read());"
        " bad = {'pydantic', 'backhaul.balance', 'backhaul.config', 'hashlib', 'yaml',"
        " 'dataclasses', 'typing'};"
        " assert not bad & set(sys.modules), bad & set(sys.modules)"
    )
    subprocess.run(
        [sys.executable, "-c", code], input=freeze(load_file(EXAMPLE)), check=True, timeout=60
    )


def test_thaw_refuses_other_bytes() -> None:
    import pickle

    with pytest.raises(TypeError, match="not a frozen edge config"):
        thaw(pickle.dumps({"listeners": []}))
