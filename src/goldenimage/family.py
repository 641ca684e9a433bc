"""`invoke bake --all` / `--image a,b`: an environment's images in dependency order.

Parents first (`ancestry.Schedule`); an image whose fingerprint is unchanged is skipped by
the bake pipeline itself (`bake.run`). With `--jobs 1` the images are baked one after the
other in this process; with more, each image is baked by a worker process of its own
(`python -m goldenimage.family`), at most `jobs` at once, so that every bake keeps its own
signals, progress and clean-up, and a signal to this process stops every worker at a safe
point. One failing image stops its descendants only (`blocked`); the others go on.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from . import ancestry, preflight
from .adapters.proc import _die_with_parent, stop_group
from .bake import run
from .errors import ConfigError, GoldenImageError, Interrupted, internal_error
from .progress import Reporter
from .settings import Environment, environment, load_environment
from .targets import target_for

Result = dict[str, Any]
BUILT, SKIPPED, FAILED, BLOCKED = "built", "skipped", "failed", "blocked"
BAKE_OVERHEAD_MIB = 768  # Packer, Ansible and QEMU's own memory beside the guest's


def default_jobs(env: Environment, cores: int | None = None, mem_available_mib: int | None = None) -> int:
    """What the host allows: one bake per `qemu.cpus` cores, and per guest memory plus overhead."""
    q = env.settings.qemu
    cores = cores if cores is not None else (os.cpu_count() or 1)
    mem = mem_available_mib if mem_available_mib is not None else _mem_available_mib()
    by_cpu = max(1, cores // q.cpus)
    by_mem = max(1, mem // (q.memory + BAKE_OVERHEAD_MIB)) if mem else 1
    return min(by_cpu, by_mem)


def _mem_available_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def parse_images(env: Environment, images: str | list[str] | None, every: bool) -> list[str] | None:
    """`--image a,b` or `--all` as names of this environment (None: every image)."""
    if every:
        if images:
            raise ConfigError("--all and --image: give one or the other")
        return None
    names = [n.strip() for n in images.split(",")] if isinstance(images, str) else list(images or [])
    names = [n for n in names if n]
    if not names:
        raise ConfigError("--image: no image named (e.g. --image web,cache, or --all)")
    for n in names:
        env.image(n)  # NotFoundError naming the settings file
    return names


def check_jobs(jobs: int | None) -> None:
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1 (got {jobs})")


def pick_image(env: Environment, image: str | None) -> str:
    if image:
        env.image(image)
        return image
    names = sorted(env.settings.images)
    if len(names) == 1:
        return names[0]
    if "web" in names:
        return "web"
    raise ConfigError(f"{env.rel(env.settings_file)} defines several images ({', '.join(names)}): "
                      "choose one with --image")


def bake(env: Environment | str, image: str | None, force: bool, reporter: Reporter) -> dict[str, Any]:
    """`invoke bake` of one image: its ancestors first (each skipped when up to date), then
    the image; the result is the image's, with `parents` naming what it was built on."""
    env = environment(env)
    name = pick_image(env, image)
    if env.bake_parents.get(name) is None:
        preflight.check(env, [name], reporter)
        return run(target_for(env), name, force, reporter)
    return bake_all(env, [name], 1, force, reporter, only=name)


Force = bool | AbstractSet[str]  # every image, or these by name


def _forced(force: Force, name: str) -> bool:
    return force if isinstance(force, bool) else name in force


def bake_all(env: Environment | str, images: list[str] | None, jobs: int | None, force: Force, reporter: Reporter,
             *, only: str | None = None) -> Result:
    """Bake `images` (None: all) of the environment with their ancestors, parents first.

    The result lists every image in order: `state` built / skipped / failed / blocked, the
    image id and status it has now, its fingerprint, `previous_id` (the newest validated
    image of that name before this run) and `error`. With `only` (the single-image `invoke
    bake`), the ancestors are baked first and then `only`'s own result is returned, its
    errors raised as they are. `force`: rebuild whatever the fingerprint says -- every
    image (True) or the named ones (nightly's images whose packages drifted)."""
    check_jobs(jobs)
    env = environment(env)
    for n in images or []:
        env.image(n)
    schedule = ancestry.Schedule.of(env.bake_parents, images)
    preflight.check(env, schedule.names, reporter)  # every playbook of the plan, before anything is built
    workers = min(jobs or default_jobs(env), len(schedule.names))
    if only is not None:
        return _one_with_ancestors(env, schedule, only, force, reporter)
    reporter.info(f"baking {len(schedule.names)} images ({', '.join(schedule.names)}), {workers} at a time")
    previous = _previous_ids(env, schedule.names)
    entries: dict[str, Result] = {}
    started = time.monotonic()
    if workers == 1:
        _sequential(env, schedule, force, reporter, entries)
    else:
        _parallel(env, schedule, workers, force, reporter, entries)
    rows = []
    for n in schedule.names:
        row = entries.get(n) or {"state": BLOCKED, "error": f"parent {schedule.blocked.get(n)} failed"}
        rows.append({"image": n, "image_id": None, "status": None, "fingerprint": None, "error": None,
                     **row, "previous_id": previous.get(n)})
    ok = all(r["state"] in (BUILT, SKIPPED) for r in rows)
    doc = {"env": env.name, "ok": ok, "jobs": workers, "images": rows,
           "seconds": round(time.monotonic() - started, 1)}
    return {**doc, "exit_code": exit_code(doc)}


def bake_cmd(env: Environment | str, image: str | None, every: bool, jobs: str | int | None, force: bool,
             reporter: Reporter) -> Result:
    """`invoke bake`: one image (its parents first), or `--all` / `--image a,b`."""
    n_jobs = _jobs(jobs)
    if every or (image and "," in image):
        env = environment(env)
        return bake_all(env, parse_images(env, image, every), n_jobs, force, reporter)
    return bake(env, image, force, reporter)


def _jobs(jobs: str | int | None) -> int | None:
    if jobs is None:
        return None
    try:
        n = int(jobs)
    except ValueError:
        raise ConfigError(f"--jobs: {jobs!r} is not a whole number") from None
    check_jobs(n)
    return n


def human_bake(result: Result) -> list[str]:
    if "jobs" in result and "images" in result:
        return human(result)
    from .bake import human_bake as one

    return one(result)


def _previous_ids(env: Environment, names: list[str]) -> dict[str, str | None]:
    reg = target_for(env).registry()
    out: dict[str, str | None] = {}
    for n in names:
        out[n] = ancestry.current_parent({"name": n}, [r.summary() for r in reg.list(n)], {})
    return out


def _one_with_ancestors(env: Environment, schedule: ancestry.Schedule, only: str, force: Force,
                        reporter: Reporter) -> Result:
    target = target_for(env)
    ids: dict[str, str] = {}
    parents: list[Result] = []
    for n in schedule.names:
        if n != only:
            reporter.info(f"==> parent image {n} first")
        res = run(target, n, _forced(force, n) if not isinstance(force, bool) else force and n == only,
                  _own(reporter), ids)
        ids[n] = res["image_id"]
        if n != only and res["skipped"]:
            reporter.info(f"    {n}: {res['reason']}")  # the image's own result says it for `only`
        if n == only:
            return {**res, "parents": parents}
        parents.append({"image": n, "image_id": res["image_id"], "skipped": res["skipped"]})
    raise AssertionError(f"{only} is not in its own lineage")


def _own(reporter: Reporter) -> Reporter:
    """A reporter of one image's bake (its own phases and durations), on the same stream."""
    return Reporter(reporter.stream, quiet=reporter.quiet)


def _entry(res: Result) -> Result:
    return {"state": SKIPPED if res.get("skipped") else BUILT, "image_id": res.get("image_id"),
            "status": res.get("status"), "fingerprint": res.get("fingerprint"), "result": res}


def _failed(err: GoldenImageError) -> Result:
    res = dict(err.result)
    return {"state": FAILED, "image_id": res.get("image_id"), "status": res.get("status"),
            "fingerprint": res.get("fingerprint"), "error": err.message, "exit_code": err.exit_code,
            "result": res}


def _progress(schedule: ancestry.Schedule, reporter: Reporter) -> None:
    def names(items: Any) -> str:
        return ", ".join(sorted(items)) or "-"

    reporter.info(f"images: building {names(schedule.running)}; waiting {names(schedule.waiting())}; "
                  f"done {names(schedule.done)}" + (f"; failed {names(schedule.failed)}" if schedule.failed else "")
                  + (f"; blocked {names(schedule.blocked)}" if schedule.blocked else ""))


def _settle(schedule: ancestry.Schedule, name: str, entry: Result, reporter: Reporter) -> None:
    if entry["state"] == FAILED:
        reporter.warn(f"{name} failed: {entry['error']}")
        for d in schedule.fail(name):
            reporter.warn(f"{d}: not baked, its parent {name} failed")
    else:
        schedule.finish(name, entry["image_id"])
    _progress(schedule, reporter)


def _sequential(env: Environment, schedule: ancestry.Schedule, force: Force, reporter: Reporter,
                entries: dict[str, Result]) -> None:
    target = target_for(env)
    while schedule.ready():
        name = schedule.ready()[0]
        schedule.start(name)
        _progress(schedule, reporter)
        try:
            entries[name] = _entry(run(target, name, _forced(force, name), _own(reporter), schedule.done))
        except Interrupted:
            raise
        except GoldenImageError as err:  # a failed or quarantined image: the others go on
            entries[name] = _failed(err)
        except Exception as exc:  # a bug, in this image's bake: it fails, the others go on
            entries[name] = {"state": FAILED, "error": internal_error(exc), "exit_code": 1}
        _settle(schedule, name, entries[name], reporter)


def _parallel(env: Environment, schedule: ancestry.Schedule, workers: int, force: Force, reporter: Reporter,
              entries: dict[str, Result]) -> None:
    """Up to `workers` worker processes at once; each reports one JSON document."""
    done: queue.Queue[tuple[str, Result]] = queue.Queue()
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        while not schedule.finished():
            for name in schedule.ready()[: workers - len(running)]:
                schedule.start(name)
                running[name] = _spawn(env, name, dict(schedule.done), _forced(force, name), reporter, done)
                _progress(schedule, reporter)
            name, entry = done.get()
            running.pop(name).wait()
            entries[name] = entry
            _settle(schedule, name, entry, reporter)
    except BaseException:
        for proc in running.values():  # each stops at a safe point and cleans up its bake
            stop_group(proc, signal.SIGTERM, grace=180)
        raise


def _spawn(env: Environment, name: str, parent_ids: dict[str, str], force: bool, reporter: Reporter,
           done: queue.Queue[tuple[str, Result]]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "goldenimage.family", "--env", env.name, "--image", name,
            "--parents", json.dumps(parent_ids)] + (["--force"] if force else [])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env={**os.environ, "GOLDENIMAGE_ROOT": str(env.root)}, start_new_session=True,
                            preexec_fn=_die_with_parent)

    def relay() -> None:  # the worker's progress, each line marked with its image
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line and not line.startswith("error: "):
                reporter.info(f"[{name}] {line}")

    def collect() -> None:
        assert proc.stdout is not None
        relaying = threading.Thread(target=relay, daemon=True)
        relaying.start()
        out = proc.stdout.read()
        proc.wait()
        relaying.join(timeout=5)
        done.put((name, _worker_entry(out, proc.returncode)))

    threading.Thread(target=collect, daemon=True).start()
    return proc


def _worker_entry(out: bytes, returncode: int) -> Result:
    try:
        doc: Result = json.loads(out)
    except ValueError:
        return {"state": FAILED, "error": f"the worker exited {returncode} without a result", "exit_code": 1}
    if doc.get("ok") is False:
        err = GoldenImageError(str(doc.get("error")))
        err.exit_code = int(doc.get("exit_code") or 1)
        err.result = doc
        return _failed(err)
    return _entry(doc)


def exit_code(result: Result) -> int:
    """2 if every failure was bad input, else 1 if anything failed, else 0."""
    codes = [int(r.get("exit_code") or 1) for r in result["images"] if r["state"] == FAILED]
    return 0 if result["ok"] else (2 if codes and all(c == 2 for c in codes) else 1)


def human(result: Result) -> list[str]:
    lines = []
    for r in result["images"]:
        what = r["image_id"] or "-"
        if r["state"] in (FAILED, BLOCKED):
            what += f"  {r['error']}"
        elif r["status"] and r["status"] != "validated":
            what += f"  ({r['status']})"
        lines.append(f"{r['image']:<12} {r['state']:<8} {what}")
    lines.append(f"{'all done' if result['ok'] else 'not all done'} in {result['seconds']:.0f}s with "
                 f"{result['jobs']} job{'s' if result['jobs'] != 1 else ''}")
    return lines


def _worker(argv: list[str] | None = None) -> None:
    """One image of a parallel `bake --all`: its result as one JSON document on stdout."""
    from .cli import run as cli_run

    p = argparse.ArgumentParser(prog="python -m goldenimage.family")
    p.add_argument("--env", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--parents", default="{}")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    parents: dict[str, str] = json.loads(a.parents)

    def work(r: Reporter) -> Result:
        return run(target_for(load_environment(a.env)), a.image, a.force, r, parents)

    cli_run(work, json_out=True)


if __name__ == "__main__":
    _worker()
