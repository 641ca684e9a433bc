"""Per-image test suites: which directories validate which image, and what they add to its
fingerprint (common changes every image, an image's own suite changes that image only)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from goldenimage import fingerprint as fp
from goldenimage.adapters import testinfra
from goldenimage.errors import ConfigError
from goldenimage.progress import Reporter
from goldenimage.settings import load_environment
from tests.unit.fp_helpers import EXTRA, FILES, make_project, write

SETTINGS = "inventories/local/goldenimage.yml"


def set_tests(project: Path, image: str, tests: str) -> None:
    """Give `image` of the local settings a `tests:` line (a YAML flow list)."""
    f = project / SETTINGS
    text = f.read_text()
    anchor = f"  {image}:\n    playbook:"
    assert anchor in text
    f.write_text(text.replace(anchor, f"  {image}:\n    tests: {tests}\n    playbook:", 1))


# -- selection ---------------------------------------------------------------------------
def test_the_project_splits_common_and_web(project: Path) -> None:
    env = load_environment("local", project)
    # web is baked on base: it keeps base's checks and adds its own; cache has nothing of web's
    assert env.suites("web") == [project / "tests/image/common", project / "tests/image/base",
                                 project / "tests/image/web"]
    assert env.suites("cache") == [project / "tests/image/common", project / "tests/image/base",
                                   project / "tests/image/cache"]
    assert env.suites("base") == [project / "tests/image/common", project / "tests/image/base"]
    assert env.suite_note("web") is None


def test_an_image_without_its_own_directory_gets_the_common_checks_only(project: Path) -> None:
    (project / "playbooks/db.yml").write_text("- hosts: all\n  roles: [base]\n")
    f = project / SETTINGS
    f.write_text(f.read_text().replace("images:\n", "images:\n  db:\n    playbook: playbooks/db.yml\n", 1))
    env = load_environment("local", project)
    assert env.suites("db") == [project / "tests/image/common"]
    note = env.suite_note("db")
    assert note is not None and "db" in note and "common checks only" in note
    # nothing of web's: only when db has a directory of its own is it added
    (project / "tests/image/db").mkdir()
    assert env.suites("db") == [project / "tests/image/common", project / "tests/image/db"]
    assert env.suite_note("db") is None


def test_an_image_no_longer_in_the_settings_gets_the_default(project: Path) -> None:
    env = load_environment("local", project)
    assert env.suites("gone") == [project / "tests/image/common"]


def test_the_settings_list_replaces_the_default(project: Path) -> None:
    (project / "checks/web-extra").mkdir(parents=True)
    set_tests(project, "web", "[tests/image/common, checks/web-extra]")
    env = load_environment("local", project)
    assert env.suites("web") == [project / "tests/image/common", project / "checks/web-extra"]
    assert env.suite_note("web") is None


@pytest.mark.parametrize(
    ("tests", "fragment"),
    [
        ("[tests/image/common, tests/image/nope]", "field images.web.tests[1]: tests/image/nope does not exist"),
        ("[tests/image/conftest.py]", "field images.web.tests[0]: tests/image/conftest.py is not a directory"),
        ("[../outside]", "field images.web.tests[0]: ../outside must be relative to the project root"),
        ("[/etc]", "field images.web.tests[0]: /etc must be relative to the project root"),
        ("[]", "field images.web.tests:"),
    ],
)
def test_a_bad_tests_entry_names_the_file_and_field(project: Path, tests: str, fragment: str) -> None:
    set_tests(project, "web", tests)
    with pytest.raises(ConfigError) as exc:
        load_environment("local", project)
    assert exc.value.exit_code == 2
    assert str(exc.value).startswith(f"{SETTINGS}: ")
    assert fragment in str(exc.value)


def test_run_suite_runs_every_directory_from_the_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    def fake_run(argv: list[str], **kw: object) -> SimpleNamespace:
        seen["argv"], seen["cwd"] = argv, kw.get("cwd")
        return SimpleNamespace(lines=["boom"])

    monkeypatch.setattr(testinfra.proc, "run", fake_run)
    suites = [tmp_path / "tests/image/common", tmp_path / "tests/image/web"]
    res = testinfra.run_suite(suites, "target", tmp_path / "cfg", {"image_name": "web"}, tmp_path,
                              Reporter(quiet=True), root=tmp_path)
    argv = seen["argv"]
    assert isinstance(argv, list) and argv[3:5] == [str(s) for s in suites]
    assert f"--rootdir={tmp_path}" in argv  # the same check names in a copy of the project
    assert seen["cwd"] == tmp_path
    assert "--hosts=ssh://target" in argv and argv[-2:] == ["-n", "2"]  # two xdist processes by default
    assert not res.ok and "did not run" in res.failures[0]
    testinfra.run_suite(suites, "local://", tmp_path / "cfg", {}, tmp_path, Reporter(quiet=True), root=tmp_path,
                        workers=1)
    assert "--hosts=local://" in seen["argv"] and seen["argv"][-2:] == ["-p", "no:xdist"]
    with pytest.raises(ValueError):
        testinfra.run_suite([], "target", tmp_path / "cfg", {}, tmp_path, Reporter(quiet=True), root=tmp_path)


# -- fingerprint -------------------------------------------------------------------------
SUITE_FILES = {
    "tests/image/conftest.py": "import pytest\n",
    "tests/image/common/test_common.py": "def test_sshd(host): pass\n",
    "tests/image/web/test_web.py": "def test_nginx(host): pass\n",
    "tests/image/other/test_other.py": "def test_other(host): pass\n",
}


@pytest.fixture
def fproject(tmp_path: Path) -> Path:
    return make_project(tmp_path / "p", {**FILES, **SUITE_FILES})


def fingerprints(root: Path) -> dict[str, str]:
    env = load_environment("local", root)
    return {image: fp.compute(fp.collect(root, env, image, EXTRA)) for image in ("web", "other")}


def test_the_image_suites_are_inputs(fproject: Path) -> None:
    env = load_environment("local", fproject)
    web = {i.name for i in fp.collect(fproject, env, "web", EXTRA)}
    other = {i.name for i in fp.collect(fproject, env, "other", EXTRA)}
    shared = {"tests/image/conftest.py", "tests/image/common/test_common.py"}
    assert shared | {"tests/image/web/test_web.py"} <= web
    assert "tests/image/other/test_other.py" not in web
    assert shared | {"tests/image/other/test_other.py"} <= other
    assert "tests/image/web/test_web.py" not in other


@pytest.mark.parametrize(
    ("rel", "changed"),
    [
        ("tests/image/web/test_web.py", {"web"}),
        ("tests/image/web/test_more.py", {"web"}),
        ("tests/image/other/test_other.py", {"other"}),
        ("tests/image/common/test_common.py", {"web", "other"}),
        ("tests/image/common/helpers/data.txt", {"web", "other"}),
        ("tests/image/conftest.py", {"web", "other"}),
        ("tests/image/unused/test_x.py", set()),
    ],
)
def test_a_suite_change_changes_the_images_that_use_it(fproject: Path, rel: str, changed: set[str]) -> None:
    before = fingerprints(fproject)
    write(fproject, rel, "# changed\n")
    after = fingerprints(fproject)
    assert {image for image in before if before[image] != after[image]} == changed


def test_a_settings_list_counts_its_directories_only(fproject: Path) -> None:
    write(fproject, "checks/web/test_x.py", "def test_x(host): pass\n")
    set_tests(fproject, "web", "[checks/web]")
    env = load_environment("local", fproject)
    names = {i.name for i in fp.collect(fproject, env, "web", EXTRA)}
    assert "checks/web/test_x.py" in names
    assert not any(n.startswith(("tests/image/common/", "tests/image/web/")) for n in names)
    before = fingerprints(fproject)
    write(fproject, "tests/image/web/test_web.py", "# not used by web any more\n")
    assert fingerprints(fproject)["web"] == before["web"]
    write(fproject, "checks/web/test_x.py", "# changed\n")
    assert fingerprints(fproject)["web"] != before["web"]


def test_an_ignored_file_in_a_suite_does_not_count(fproject: Path) -> None:
    before = fingerprints(fproject)
    write(fproject, "tests/image/web/__pycache__/test_web.cpython-312.pyc", "x")
    write(fproject, "tests/image/web/.pytest_cache/x", "x")
    assert fingerprints(fproject) == before


def test_the_ami_validation_runs_the_images_suites(project: Path, tmp_path: Path) -> None:
    from goldenimage.aws.target import AwsTarget
    from goldenimage.aws.validate import TestinfraCheck

    env = load_environment("aws", project)
    check = AwsTarget(env).remote_check({"image_name": "web", "image_id": "x"}, tmp_path)
    assert isinstance(check, TestinfraCheck)
    assert check.suites == [project / "tests/image/common", project / "tests/image/base", project / "tests/image/web"]
    assert check.root == project and check.note is None
    other = AwsTarget(env).remote_check({"image_name": "db", "image_id": "y"}, tmp_path)
    assert isinstance(other, TestinfraCheck)
    assert other.suites == [project / "tests/image/common"]
    assert other.note is not None and "common checks only" in other.note
