"""Static checks of roles/ and playbooks/ (fast, no VM).

The rules (docs/STYLE: dev-sec, geerlingguy): ansible.builtin modules only, by their fully
qualified names; every variable a role defines or uses carries the role's name as prefix;
meta/argument_specs.yml types and documents every option and agrees with defaults/; a master
switch per role; the playbook passes `ansible-playbook --syntax-check`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest
import yaml
from ansible.parsing.mod_args import ModuleArgsParser

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"
PLAYBOOK = REPO / "playbooks" / "web.yml"
# the family: base is baked from the Debian base disk, web and cache on the base image
PLAYBOOKS = {"base": ["base", "hygiene"], "web": ["web", "hygiene"], "cache": ["cache", "hygiene"]}
INVENTORY = REPO / "inventories" / "local" / "hosts.yml"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").is_file())
TASK_FILES = sorted(
    p
    for role in ROLES
    for sub in ("tasks", "handlers")
    for p in (ROLES_DIR / role / sub).glob("*.yml")
)
# Keys of a task whose value is a bare Jinja expression rather than a templated string.
EXPRESSION_KEYS = {"when", "changed_when", "failed_when", "until", "that"}
# Names a role may use without its prefix: connection and magic variables, loop items, lookups.
ALLOWED_UNPREFIXED = {"item", "omit", "lookup", "query", "q", "inventory_hostname"}
BLOCK_KEYS = ("block", "rescue", "always")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def role_of(path: Path) -> str:
    return path.relative_to(ROLES_DIR).parts[0]


def iter_tasks(tasks: list[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
    """Every task, descending into blocks (a block itself is yielded too)."""
    for task in tasks or []:
        yield task
        for key in BLOCK_KEYS:
            if key in task:
                yield from iter_tasks(task[key])


def defaults_of(role: str) -> dict[str, Any]:
    path = ROLES_DIR / role / "defaults" / "main.yml"
    return (load_yaml(path) or {}) if path.is_file() else {}


def spec_options_of(role: str) -> dict[str, dict[str, Any]]:
    specs = load_yaml(ROLES_DIR / role / "meta" / "argument_specs.yml")["argument_specs"]
    return dict(specs["main"]["options"])


class _AnyName(dict[str, Any]):
    """Filters and tests as seen by the parser: Ansible's are not loaded, all are accepted."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key, default) or (lambda *args, **kwargs: None)


def jinja_names(source: str) -> set[str]:
    env = jinja2.Environment()
    env.filters = _AnyName(env.filters)
    env.tests = _AnyName(env.tests)
    return set(jinja2.meta.find_undeclared_variables(env.parse(source)))


def names_in_value(value: Any, expression: bool = False) -> set[str]:
    """Variables referenced by a task value (templated strings, or bare expressions)."""
    if isinstance(value, dict):
        return set().union(*(names_in_value(v, k in EXPRESSION_KEYS) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(names_in_value(v, expression) for v in value))
    if isinstance(value, str):
        if expression:
            return jinja_names("{{ " + value + " }}")
        if "{{" in value or "{%" in value:
            return jinja_names(value)
    return set()


def prefixed(name: str, role: str) -> bool:
    return name.startswith(f"{role}_")


def test_roles_exist() -> None:
    assert ROLES == ["base", "cache", "hygiene", "web"]
    assert len(TASK_FILES) >= 6


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: str(p.relative_to(ROLES_DIR)))
def test_task_modules_are_ansible_builtin(path: Path) -> None:
    offenders = []
    for task in iter_tasks(load_yaml(path)):
        if any(key in task for key in BLOCK_KEYS):
            continue
        action, _, _ = ModuleArgsParser(task).parse(skip_action_validation=True)
        if not action.startswith("ansible.builtin."):
            offenders.append(f"{task.get('name', '<unnamed>')}: {action}")
    assert not offenders, offenders


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: str(p.relative_to(ROLES_DIR)))
def test_tasks_are_named(path: Path) -> None:
    unnamed = [task for task in iter_tasks(load_yaml(path)) if not task.get("name")]
    assert not unnamed, unnamed


@pytest.mark.parametrize("role", ROLES)
def test_role_has_meta_and_master_switch(role: str) -> None:
    meta = load_yaml(ROLES_DIR / role / "meta" / "main.yml")
    assert meta["galaxy_info"]["description"]
    assert meta.get("dependencies", []) == []
    assert defaults_of(role).get(f"{role}_enabled") is True


@pytest.mark.parametrize("role", ROLES)
def test_role_switch_guards_every_task(role: str) -> None:
    """tasks/main.yml: one block under the master switch, plus meta tasks only."""
    tasks = load_yaml(ROLES_DIR / role / "tasks" / "main.yml")
    guarded = [t for t in tasks if "block" in t]
    assert len(guarded) == 1 and guarded[0]["when"] == f"{role}_enabled | bool"
    others = [t for t in tasks if "block" not in t]
    assert all("ansible.builtin.meta" in t for t in others), others


@pytest.mark.parametrize("role", ROLES)
def test_notified_handlers_exist_and_are_used(role: str) -> None:
    path = ROLES_DIR / role / "handlers" / "main.yml"
    handlers = (load_yaml(path) or []) if path.is_file() else []
    defined = {h["name"] for h in handlers}
    defined |= {name for h in handlers for name in _as_list(h.get("listen"))}
    notified: set[str] = set()
    for task_file in TASK_FILES:
        if role_of(task_file) == role and task_file.parent.name == "tasks":
            for task in iter_tasks(load_yaml(task_file)):
                notified |= set(_as_list(task.get("notify")))
    assert sorted(notified - defined) == [], "notified but not defined"
    assert sorted(defined - notified) == [], "handlers nothing notifies"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_role_prefixed(role: str) -> None:
    defaults = defaults_of(role)
    assert defaults, f"{role} has no defaults"
    assert [name for name in defaults if not prefixed(name, role)] == []


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_options_are_role_prefixed(role: str) -> None:
    assert [name for name in spec_options_of(role) if not prefixed(name, role)] == []


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_document_every_default(role: str) -> None:
    options = spec_options_of(role)
    defaults = defaults_of(role)
    assert sorted(set(defaults) - set(options)) == [], "defaults without an argument spec"
    mismatched = {
        name: (value, options[name].get("default"))
        for name, value in defaults.items()
        if options[name].get("default") != value
    }
    assert mismatched == {}, "defaults/main.yml and argument_specs disagree (file, spec)"


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_options_are_typed_and_described(role: str) -> None:
    defaults = defaults_of(role)
    bad = {}
    for name, option in spec_options_of(role).items():
        problems = []
        if not option.get("type"):
            problems.append("no type")
        if not option.get("description"):
            problems.append("no description")
        if option.get("type") == "list" and not option.get("elements"):
            problems.append("list without elements")
        if name not in defaults and not option.get("required"):
            problems.append("neither a default nor required")
        if problems:
            bad[name] = problems
    assert bad == {}


@pytest.mark.parametrize("role", ROLES)
def test_registered_and_set_variables_are_role_prefixed(role: str) -> None:
    bad = []
    for path in TASK_FILES:
        if role_of(path) != role:
            continue
        for task in iter_tasks(load_yaml(path)):
            names = []
            if "register" in task:
                names.append(task["register"])
            names += list((task.get("vars") or {}).keys())
            names += [k for k in (task.get("ansible.builtin.set_fact") or {}) if k != "cacheable"]
            if "loop_control" in task and "loop_var" in task["loop_control"]:
                names.append(task["loop_control"]["loop_var"])
            bad += [f"{path.name}: {n}" for n in names if not prefixed(n, role)]
    assert bad == []


@pytest.mark.parametrize("role", ROLES)
def test_role_uses_only_its_own_variables(role: str) -> None:
    """Tasks, handlers and templates reference <role>_*, ansible_* or loop/lookup names only."""
    used: dict[str, set[str]] = {}
    for path in TASK_FILES:
        if role_of(path) == role:
            for task in iter_tasks(load_yaml(path)):
                body = {k: v for k, v in task.items() if k not in BLOCK_KEYS}
                used[str(path.relative_to(ROLES_DIR))] = used.get(
                    str(path.relative_to(ROLES_DIR)), set()
                ) | names_in_value(body)
    for path in sorted((ROLES_DIR / role / "templates").glob("*.j2")):
        used[str(path.relative_to(ROLES_DIR))] = jinja_names(path.read_text())
    foreign = {
        where: sorted(
            n
            for n in names
            if not prefixed(n, role)
            and not n.startswith("ansible_")
            and n not in ALLOWED_UNPREFIXED
        )
        for where, names in used.items()
    }
    assert {k: v for k, v in foreign.items() if v} == {}


def test_jinja_name_finder_sees_foreign_variables() -> None:
    """Guard for the check above: it must notice an unprefixed name."""
    task = {"ansible.builtin.debug": {"msg": "{{ other_var }}"}, "when": "x_enabled | bool"}
    assert names_in_value(task) == {"other_var", "x_enabled"}


@pytest.mark.parametrize(("image", "expected"), sorted(PLAYBOOKS.items()))
def test_playbook_runs_its_roles_then_hygiene(image: str, expected: list[str]) -> None:
    plays = load_yaml(REPO / "playbooks" / f"{image}.yml")
    assert len(plays) == 1
    play = plays[0]
    assert play["hosts"] == "all" and play["become"] is True
    roles = [r["role"] if isinstance(r, dict) else r for r in play["roles"]]
    assert roles == expected
    assert not any(k in play for k in ("tasks", "pre_tasks", "post_tasks")), (
        "hygiene must be the last thing the play does"
    )


def test_playbook_maps_the_bake_variables() -> None:
    play_vars = load_yaml(PLAYBOOK)[0]["vars"]
    for bake_var, role_var in [
        ("goldenimage_image_name", "web_healthz_image_name"),
        ("goldenimage_fingerprint", "web_healthz_fingerprint"),
        ("goldenimage_build_time", "web_healthz_build_time"),
    ]:
        assert bake_var in jinja_names(play_vars[role_var])


def test_hygiene_removes_the_build_key_last() -> None:
    main = load_yaml(ROLES_DIR / "hygiene" / "tasks" / "main.yml")
    block = next(t for t in main if "block" in t)["block"]
    assert block[-1]["ansible.builtin.import_tasks"] == "authorized_keys.yml"
    last = load_yaml(ROLES_DIR / "hygiene" / "tasks" / "authorized_keys.yml")[-1]
    assert last["ansible.builtin.file"]["state"] == "absent"
    assert "loop" not in last, "one module call: a second one would need a new connection"
    assert last["ansible.builtin.file"]["path"] == "{{ hygiene_build_user_keys_file }}"


@pytest.mark.parametrize("image", sorted(PLAYBOOKS))
def test_playbook_syntax_check(image: str) -> None:
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROLES_DIR), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "--syntax-check",
            "-i",
            str(INVENTORY),
            str(REPO / "playbooks" / f"{image}.yml"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
