"""Bad input to `invoke bake`: one `error:` line naming the culprit, exit 2, nothing written.

These run the real command line (invoke in a subprocess) on a copy of the project, and stop
before any VM boots, so they are fast.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_invoke


def assert_one_error_line(stderr: str, *fragments: str) -> str:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


def assert_nothing_written(home: Path) -> None:
    store = home / "store"
    assert not (store / "catalog.json").exists()
    assert not (store / "images").exists() or not any((store / "images").iterdir())
    assert not (store / ".tmp").exists() or not any((store / ".tmp").iterdir())


def test_unknown_env(project: Path, tmp_path: Path) -> None:
    res = run_invoke("bake", "--env", "prod", root=project, home=tmp_path / "home")
    assert res.returncode == 2
    assert_one_error_line(res.stderr, "unknown environment 'prod'", "known: aws, local, sandbox")
    assert_nothing_written(tmp_path / "home")


def test_unknown_image(project: Path, tmp_path: Path) -> None:
    res = run_invoke("bake", "--image", "db", root=project, home=tmp_path / "home")
    assert res.returncode == 2
    assert_one_error_line(res.stderr, "unknown image 'db'", "inventories/local/goldenimage.yml")


def test_unknown_env_in_json_mode_prints_a_json_error(project: Path, tmp_path: Path) -> None:
    import json

    res = run_invoke("bake", "--env", "prod", "--json", root=project, home=tmp_path / "home")
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 2 and "prod" in doc["error"]


def test_broken_settings_file(project: Path, tmp_path: Path) -> None:
    (project / "inventories/local/goldenimage.yml").write_text("images: {web: {playbook: 3}\n")
    res = run_invoke("bake", root=project, home=tmp_path / "home")
    assert res.returncode == 2
    assert_one_error_line(res.stderr, "inventories/local/goldenimage.yml")


def _path_without(tmp_path: Path, *tools: str) -> str:
    """A PATH holding every tool of this PATH but `tools` (symlinked into one directory)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = Path(d) / name
            if name in tools or (bindir / name).exists() or not os.access(target, os.X_OK):
                continue
            (bindir / name).symlink_to(target)
    return str(bindir)


@pytest.mark.parametrize(("tool", "hint"), [("packer", "packer"), ("qemu-system-x86_64", "qemu-system-x86")])
def test_missing_host_tool(project: Path, tmp_path: Path, tool: str, hint: str) -> None:
    res = run_invoke("bake", root=project, home=tmp_path / "home",
                     env={"PATH": _path_without(tmp_path, tool)})
    assert res.returncode == 2
    assert_one_error_line(res.stderr, f"{tool} not found", "invoke setup", hint)
    assert_nothing_written(tmp_path / "home")


def test_malformed_template_shows_packer_file_and_line(project: Path, tmp_path: Path) -> None:
    src = project / "packer/sources.pkr.hcl"
    lines = src.read_text().splitlines()
    idx = next(i for i, ln in enumerate(lines) if "output_directory" in ln)
    lines[idx] = lines[idx] + " +"
    src.write_text("\n".join(lines) + "\n")
    res = run_invoke("bake", root=project, home=tmp_path / "home")
    assert res.returncode == 2
    assert_one_error_line(res.stderr, f"packer/sources.pkr.hcl:{idx + 1}", "Invalid expression")
    assert_nothing_written(tmp_path / "home")


def test_undeclared_variable_is_packers_error(project: Path, tmp_path: Path) -> None:
    # the var file sets serial_log, which the templates no longer declare
    (project / "packer/variables.pkr.hcl").write_text(
        (project / "packer/variables.pkr.hcl").read_text().replace('variable "serial_log"', 'variable "serial_logg"')
    )
    res = run_invoke("bake", root=project, home=tmp_path / "home")
    assert res.returncode == 2
    assert_one_error_line(res.stderr, "packer validate")


def test_no_project_here(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    shutil.copy2(Path(__file__).resolve().parents[2] / "tasks.py", tmp_path / "empty" / "tasks.py")
    env = {k: v for k, v in os.environ.items() if k != "GOLDENIMAGE_ROOT"}
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "invoke", "bake"], cwd=tmp_path / "empty", env=env,
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert_one_error_line(res.stderr, "no project here")


def test_setup_check_names_missing_tools_and_packages(project: Path, tmp_path: Path) -> None:
    res = run_invoke("setup", "--check", root=project, env={"PATH": _path_without(tmp_path, "mmdebstrap")})
    assert res.returncode == 2
    assert_one_error_line(res.stderr, "missing mmdebstrap", "apt-get install mmdebstrap")


def test_setup_without_apt_says_what_to_install(project: Path, tmp_path: Path) -> None:
    res = run_invoke("setup", root=project, env={"PATH": _path_without(tmp_path, "apt-get", "packer", "extlinux")})
    assert res.returncode == 2
    assert_one_error_line(res.stderr, "no apt-get here", "extlinux packer")


def test_setup_reports_versions(project: Path) -> None:
    import json

    res = run_invoke("setup", "--check", "--json", root=project)
    assert res.returncode == 0, res.stderr
    versions = json.loads(res.stdout)["versions"]
    assert versions["packer"].startswith("1.") and versions["ansible-core"].startswith("2.")
    assert all(versions[t] for t in ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "extlinux"))


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [("tests/image/nope", "tests/image/nope does not exist"),
     ("tests/image/conftest.py", "tests/image/conftest.py is not a directory")],
)
def test_missing_image_suite_directory(project: Path, tmp_path: Path, entry: str, fragment: str) -> None:
    settings = project / "inventories/local/goldenimage.yml"
    text = settings.read_text()
    assert "  web:\n    playbook:" in text
    settings.write_text(text.replace("  web:\n    playbook:", f"  web:\n    tests: [tests/image/common, {entry}]\n    playbook:", 1))
    home = tmp_path / "home"
    res = run_invoke("bake", root=project, home=home)
    assert res.returncode == 2, res.stderr
    assert_one_error_line(res.stderr, "inventories/local/goldenimage.yml", "field images.web.tests[1]", fragment)
    assert_nothing_written(home)


@pytest.mark.parametrize(
    ("parent", "field", "fragment"),
    [("db", "field images.web.parent.image", "unknown image 'db' (known: base, cache, web)"),
     ("web", "field images.web.parent", "a parent cycle: web -> web"),
     ("{image: base, env: aws}", "field images.web.parent.env", "a parent must be an image of this environment")],
)
def test_bad_parent(project: Path, tmp_path: Path, parent: str, field: str, fragment: str) -> None:
    settings = project / "inventories/local/goldenimage.yml"
    text = settings.read_text()
    assert "    parent: base          #" in text
    settings.write_text(text.replace("    parent: base          #", f"    parent: {parent}          #", 1))
    home = tmp_path / "home"
    res = run_invoke("bake", "--all", root=project, home=home)
    assert res.returncode == 2, res.stderr
    assert_one_error_line(res.stderr, "inventories/local/goldenimage.yml", field, fragment)
    assert_nothing_written(home)


def test_parent_cycle_through_two_images(project: Path, tmp_path: Path) -> None:
    settings = project / "inventories/local/goldenimage.yml"
    text = settings.read_text()
    text = text.replace("    playbook: playbooks/base.yml\n", "    playbook: playbooks/base.yml\n    parent: cache\n", 1)
    settings.write_text(text)
    home = tmp_path / "home"
    res = run_invoke("bake", root=project, home=home)
    assert res.returncode == 2, res.stderr
    assert_one_error_line(res.stderr, "field images.base.parent", "a parent cycle: base -> cache -> base")
    assert_nothing_written(home)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--all", "--jobs", "0"], "--jobs: must be at least 1 (got 0)"),
    (["--image", "web,db"], "unknown image 'db'"),
    (["--all", "--image", "web"], "--all and --image: give one or the other"),
])
def test_bad_bake_all_options(project: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    home = tmp_path / "home"
    res = run_invoke("bake", *args, root=project, home=home)
    assert res.returncode == 2, res.stderr
    assert_one_error_line(res.stderr, fragment)
    assert_nothing_written(home)



def _two_roots(project: Path) -> None:
    """cache without a parent: base and cache are both roots (they bake at once with --jobs 2)."""
    settings = project / "inventories/local/goldenimage.yml"
    text = settings.read_text()
    assert "    groups: [cache]\n    disk_size: 4G\n    parent: base\n" in text
    settings.write_text(text.replace("    groups: [cache]\n    disk_size: 4G\n    parent: base\n",
                                     "    groups: [cache]\n    disk_size: 4G\n", 1))


def test_bake_all_in_worker_processes_reports_each_image(project: Path, tmp_path: Path) -> None:
    """Two roots bake at once in worker processes; packer is missing, so both fail at their
    first step: each row says why, web (on base) is blocked, every failure is bad input
    (exit 2), and nothing is written."""
    import json

    _two_roots(project)
    home = tmp_path / "home"
    res = run_invoke("bake", "--all", "--jobs", "2", "--json", root=project, home=home,
                     env={"PATH": _path_without(tmp_path, "packer")})
    assert res.returncode == 2, res.stderr
    doc = json.loads(res.stdout)
    rows = {r["image"]: r for r in doc["images"]}
    assert [r["image"] for r in doc["images"]] == ["base", "cache", "web"] and doc["jobs"] == 2
    assert rows["base"]["state"] == rows["cache"]["state"] == "failed"
    assert all("packer not found" in rows[n]["error"] and rows[n]["exit_code"] == 2 for n in ("base", "cache"))
    assert rows["web"]["state"] == "blocked" and rows["web"]["error"] == "parent base failed"
    assert "images: building base, cache" in res.stderr and "warning: web: not baked, its parent base failed" in res.stderr
    assert "Traceback" not in res.stderr and not [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert_nothing_written(home)


def test_a_signal_stops_every_worker_of_bake_all(project: Path, tmp_path: Path) -> None:
    """SIGTERM to `bake --all --jobs 2` while both workers wait for another bake's lock: each
    worker stops at that safe point, the command says `interrupted` (exit 1), and no worker
    process is left."""
    import signal
    import subprocess
    import sys

    from goldenimage.adapters.proc import processes_mentioning
    from goldenimage.fsutil import file_lock
    from tests.conftest import use_file_base, wait_for_output

    _two_roots(project)
    use_file_base(project, "local", tmp_path)
    home = tmp_path / "home"
    locks = home / "store" / "locks"
    log = tmp_path / "bake.log"
    env = {**os.environ, "GOLDENIMAGE_ROOT": str(project), "GOLDENIMAGE_HOME": str(home)}
    with file_lock(locks / "base.lock"), file_lock(locks / "cache.lock"), log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "bake", "--all", "--jobs", "2"], cwd=project,
                                env=env, stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL)
        try:
            for name in ("base", "cache"):
                wait_for_output(log, proc, f"[{name}] another bake of {name!r} is running", timeout=120, poll=0.2)
            workers = [pid for pid in processes_mentioning("goldenimage.family") if _ppid(pid) == proc.pid]
            assert len(workers) == 2
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 1, text
    assert_one_error_line(text, "interrupted")
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived its bake --all"
    assert_nothing_written(home)


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
