"""`invoke site [--out DIR]`: the registry as a static site.

The environment's target gathers a snapshot (its images and their manifests, every
channel's history, the nightly reports, and on aws/sandbox its groups and the image each
instance runs); `site_render.render` turns it into pages (pure); they are written to a new
directory beside `DIR` and swapped in at the end, so a reader never sees half a site and a
failed run leaves the previous one in place. A directory that this command did not write is
never replaced.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import commands, site_render
from .errors import ConfigError, GoldenImageError
from .paths import store_dir
from .progress import Reporter
from .settings import Environment, environment
from .targets import target_for

Result = dict[str, Any]
MARKER = ".goldenimage-site"


def default_out(env_name: str) -> Path:
    return store_dir() / "site" / env_name


def gather(env: Environment, reporter: Reporter, *, report_dir: Path | None = None,
           now: datetime | None = None) -> Result:
    """The snapshot `site_render.render` takes (see there)."""
    target = target_for(env)
    listing = commands.images(env, None, None, reporter, tree=True)
    reg = target.registry()
    manifests: dict[str, Any] = {}
    for row in listing["images"]:
        try:
            manifests[row["id"]] = reg.manifest(row["id"])
        except GoldenImageError as exc:
            reporter.warn(f"{row['id']}: no manifest ({exc})")
            manifests[row["id"]] = {}
    names = set(env.settings.images) | {str(r["name"]) for r in listing["images"]}
    return {
        "env": env.name, "target": target.name,
        "generated": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "images": listing["images"], "tree": listing.get("tree", []), "manifests": manifests,
        "histories": reg.histories(names), "nightly": nightly_runs(report_dir or env.report_dir()),
        "fleet": target.fleet(),
    }


def nightly_runs(directory: Path) -> list[Result]:
    """The nightly reports in `directory`, newest first: {"file", "links", "doc"}; a report
    that cannot be read is left out."""
    runs: list[Result] = []
    for path in directory.glob("nightly-*.json") if directory.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        links = {"json": f"nightly/{path.name}"}
        if path.with_suffix(".md").is_file():
            links["markdown"] = f"nightly/{path.with_suffix('.md').name}"
        runs.append({"file": str(path), "links": links, "doc": doc})
    runs.sort(key=lambda r: (str(r["doc"].get("started") or ""), r["file"]), reverse=True)
    return runs


def write(pages: dict[str, str], out: Path, copies: dict[str, Path] | None = None) -> None:
    """The pages (and `copies`: site path -> file) as the directory `out`, swapped in whole."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise ConfigError(f"--out {out}: exists and is not a site `invoke site` wrote (choose another directory)")
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}-new-", dir=out.parent))
    try:
        for rel, text in pages.items():
            path = new / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        for rel, src in (copies or {}).items():
            (new / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, new / rel)
        (new / MARKER).write_text("written by `invoke site`; replaced whole on each run\n")
        new.chmod(0o755)
        old = out.parent / f".{out.name}-old"
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            out.rename(old)
        new.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def site(env: Environment | str, out: str | None, reporter: Reporter, *, root: Path | None = None,
         now: datetime | None = None, report_dir: str | Path | None = None) -> Result:
    """`invoke site`: the registry's pages written to `out` (default `default_out`); the
    nightly reports are read from `report_dir` (default: where `invoke nightly` writes)."""
    env = environment(env, root)
    target_dir = Path(out).expanduser().resolve() if out else default_out(env.name)
    with reporter.phase("site", f"gather {env.name}'s registry"):
        snap = gather(env, reporter, now=now, report_dir=env.report_dir(report_dir))
    pages = site_render.render(snap)
    copies = {link: Path(run["file"]).with_name(Path(link).name)
              for run in snap["nightly"] for link in run["links"].values()}
    write(pages, target_dir, copies)
    html = [p for p in pages if p.endswith(".html")]
    return {"env": env.name, "out": str(target_dir), "index": str(target_dir / "index.html"),
            "pages": len(html), "bytes": sum(len(t.encode()) for t in pages.values()),
            "images": len(snap["images"]), "nightly_runs": len(snap["nightly"]),
            "groups": None if snap["fleet"] is None else len(snap["fleet"])}


def human_site(r: Result) -> list[str]:
    groups = "" if r["groups"] is None else f", {r['groups']} groups"
    return [f"site of {r['env']}: {r['pages']} pages ({r['images']} images, {r['nightly_runs']} nightly runs{groups})",
            f"open {r['index']}"]
