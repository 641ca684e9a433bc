from __future__ import annotations

from typing import Any

import pytest

from goldenimage.errors import ConfigError
from goldenimage.rotation.policy import GroupPolicy, get_policy, load_policies

SRC = "inventories/sandbox/goldenimage.yml"


def _raw(web: dict[str, Any]) -> dict[str, Any]:
    return {"target": "sandbox", "extra": {"rotation": {"groups": {"web": web}}}}


def test_defaults_and_asg_name() -> None:
    pol = load_policies(_raw({"image": "web", "batch_size": 3}), SRC)["web"]
    assert pol.asg == "web"
    assert pol.batch_count(12) == 3
    assert pol.strategy == "rolling"
    assert pol.min_healthy(12) == 12


def test_percent_batch_and_surge() -> None:
    pol = GroupPolicy(batch_size="25%", max_surge_percent=25, min_healthy_percent=90)
    assert (pol.batch_count(12), pol.surge(12), pol.min_healthy(12)) == (3, 3, 11)
    assert pol.batch_count(1) == 1 and pol.surge(1) == 1


def test_accepts_extra_mapping_directly() -> None:
    pols = load_policies({"rotation": {"groups": {"web": {"asg": "web-prod"}}}}, SRC)
    assert pols["web"].asg == "web-prod"
    assert load_policies({"target": "local"}, SRC) == {}


@pytest.mark.parametrize(
    ("web", "field", "text"),
    [
        ({"batch_size": "0%"}, "batch_size", "neither a count nor a percentage"),
        ({"batch_size": 0}, "batch_size", "at least 1"),
        ({"min_healthy_percent": 120}, "min_healthy_percent", "less than or equal to 100"),
        ({"checkpoints": [50, 20]}, "checkpoints", "strictly increasing"),
        ({"strategy": "blue-green"}, "strategy", "rolling"),
        ({"batch_sise": 2}, "batch_sise", "Extra inputs"),
        ({"health": {"http": {"url": "ftp://x"}}}, "health.http.url", "pattern"),
        ({"max_surge_percent": 0, "min_healthy_percent": 100}, "", "no room"),
    ],
)
def test_errors_name_file_and_field(web: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_policies(_raw(web), SRC)
    where = "extra.rotation.groups.web" + (f".{field}" if field else "")
    assert str(exc.value).startswith(f"{SRC}: field {where}: ")
    assert text in str(exc.value)
    assert exc.value.exit_code == 2


def test_unknown_group() -> None:
    with pytest.raises(ConfigError, match="no group 'api' \\(known: web\\)"):
        get_policy(load_policies(_raw({}), SRC), "api", SRC)
