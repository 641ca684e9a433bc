"""Pure: the registry page. A snapshot of an environment's registry in, static pages out.

`render(snapshot)` returns `{relative path: text}`: HTML pages and one stylesheet, no
JavaScript. Every table and list is plain HTML (a terminal browser reads it); the family is
also drawn as an inline SVG graph. Colours follow the reader's `prefers-color-scheme`.

The snapshot is plain data (`site.gather` builds it from a target's registry):

- `env`, `target`, `generated` (UTC text);
- `images`: the rows `invoke images` lists (id, name, status, created, fingerprint,
  channels, parent, outdated, stage);
- `tree`: `invoke images --tree`'s nodes (image, depth, parent, images);
- `manifests`: image id -> its manifest (`{}` when unreadable);
- `histories`: image name -> channel -> its moves (`models.history_entry` shape);
- `nightly`: the nightly reports, newest first: {"file", "links": {kind: relative path},
  "doc": the report};
- `fleet`: None (no groups on this target), or one row per group: {"group", "asg", "image",
  "channel", "desired", "min", "max", "error", "instances": [{"id", "image_id",
  "lifecycle", "health"}]}.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from . import pkgdiff

Page = dict[str, str]
Snapshot = Mapping[str, Any]

CSS = """\
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #ffffff; --muted: #57606a; --line: #d0d7de;
  --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --accent: #0969da; --bar: #54aeff; --bar2: #8250df; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --bg: #0d1117; --muted: #9198a1; --line: #30363d;
    --ok: #3fb950; --bad: #f85149; --warn: #d29922; --accent: #4493f8; --bar: #388bfd; --bar2: #a371f7; }
}
body { font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 0 auto;
  max-width: 72rem; padding: 0 1rem 3rem; }
a { color: var(--accent); }
nav { border-bottom: 1px solid var(--line); padding: .6rem 0; margin-bottom: 1rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1.5rem; }
th, td { border-bottom: 1px solid var(--line); padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { font-weight: 600; }
code, .id { font-family: ui-monospace, monospace; font-size: 90%; }
.muted { color: var(--muted); }
.status { font-weight: 600; }
.s-validated, .s-current, .s-done { color: var(--ok); }
.s-revoked, .s-quarantined, .s-corrupt, .s-failed, .s-deregistered { color: var(--bad); }
.s-building, .s-outdated, .s-skipped, .s-unknown { color: var(--warn); }
.mark { font-weight: 600; color: var(--bad); }
.outdated { color: var(--warn); font-weight: 600; }
.security { color: var(--bad); font-weight: 600; }
svg text { fill: var(--fg); font: 13px system-ui, sans-serif; }
svg .node { fill: var(--bg); stroke: var(--line); }
svg .node.s-revoked, svg .node.s-quarantined { stroke: var(--bad); }
svg .node.stale { stroke: var(--warn); stroke-dasharray: 4 2; }
svg .edge { stroke: var(--muted); fill: none; }
.bar { height: .8rem; background: var(--bar); min-width: 1px; }
.bar.task { background: var(--bar2); }
.track { width: 40%; }
ol.timeline { list-style: none; padding-left: 0; border-left: 2px solid var(--line); }
ol.timeline li { margin: 0 0 .6rem .8rem; }
"""

STATUS_WORDS = {"validated", "quarantined", "revoked", "building", "corrupt", "deregistered",
                "current", "outdated", "unknown", "done", "failed", "skipped"}


def render(snap: Snapshot) -> Page:
    """Every page of the site for `snap`."""
    images = list(snap.get("images") or [])
    by_id = {str(r["id"]): r for r in images}
    pages: Page = {"style.css": CSS}
    pages["index.html"] = _index(snap, images)
    pages["images.html"] = _images_page(snap, images)
    pages["channels.html"] = _channels_page(snap, by_id)
    pages["nightly.html"] = _nightly_page(snap)
    pages["fleet.html"] = _fleet_page(snap, images)
    index = Index(snap, images)
    for rec in images:
        pages[image_path(rec["id"])] = _image_page(snap, rec, index)
    return pages


def image_path(image_id: str) -> str:
    """The page of one image, relative to the site's root."""
    return f"image/{slug(image_id)}.html"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))


# -- building blocks ------------------------------------------------------------------------
def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _status(word: Any) -> str:
    w = str(word or "-")
    cls = f"status s-{w}" if w in STATUS_WORDS else "status"
    return f'<span class="{cls}">{_e(w)}</span>'


def _doc(snap: Snapshot, title: str, body: str, depth: int = 0) -> str:
    up = "../" * depth
    links = [("index.html", "Overview"), ("images.html", "Images"), ("channels.html", "Channels"),
             ("nightly.html", "Nightly runs"), ("fleet.html", "Fleet")]
    nav = "".join(f'<a href="{up}{href}">{_e(text)}</a>' for href, text in links)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<meta name=\"color-scheme\" content=\"light dark\">\n"
        f"<title>{_e(title)} · goldenimage {_e(snap.get('env'))}</title>\n"
        f"<link rel=\"stylesheet\" href=\"{up}style.css\">\n</head>\n<body>\n"
        f"<nav aria-label=\"site\">{nav}</nav>\n<main>\n<h1>{_e(title)}</h1>\n{body}\n</main>\n"
        f"<footer class=\"muted\"><p>environment {_e(snap.get('env'))} (target {_e(snap.get('target'))}), "
        f"generated {_e(snap.get('generated'))}</p></footer>\n</body>\n</html>\n"
    )


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], caption: str = "") -> str:
    """A table whose cells are already HTML."""
    cap = f"<caption class=\"muted\">{_e(caption)}</caption>" if caption else ""
    th = "".join(f"<th scope=\"col\">{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>{cap}<thead><tr>{th}</tr></thead>\n<tbody>\n{body}</tbody></table>"


def _image_link(image_id: Any, depth: int = 0, by_id: Mapping[str, Any] | None = None) -> str:
    if not image_id:
        return '<span class="muted">none</span>'
    if by_id is not None and str(image_id) not in by_id:
        return f'<span class="id">{_e(image_id)}</span>'
    return f'<a class="id" href="{"../" * depth}{image_path(str(image_id))}">{_e(image_id)}</a>'


def _newest(rows: Iterable[Mapping[str, Any]], status: str | None = None) -> Mapping[str, Any] | None:
    chosen = [r for r in rows if status is None or r.get("status") == status]
    return max(chosen, key=lambda r: (str(r.get("created") or ""), str(r["id"]))) if chosen else None


# -- the overview: the family graph ----------------------------------------------------------
def _names(snap: Snapshot, images: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One node per image name, parents before children (`tree`; names without a node
    after it, at depth 0)."""
    nodes = [dict(n) for n in snap.get("tree") or []]
    known = {n["image"] for n in nodes}
    for name in sorted({str(r["name"]) for r in images} - known):
        nodes.append({"image": name, "depth": 0, "parent": None})
    for n in nodes:
        mine = [r for r in images if r["name"] == n["image"]]
        n["count"] = len(mine)
        n["latest"] = _newest(mine)
        n["validated"] = _newest(mine, "validated")
        n["channels"] = sorted({c for r in mine for c in r.get("channels") or []})
        n["outdated"] = sum(1 for r in mine if r.get("outdated"))
    return nodes


def family_svg(nodes: list[dict[str, Any]]) -> str:
    """The family as boxes (one per image name) and lines from each parent to its children."""
    w, h, dx, dy = 220, 46, 260, 62
    pos = {n["image"]: (10 + n["depth"] * dx, 10 + i * dy) for i, n in enumerate(nodes)}
    width = 20 + max((x for x, _ in pos.values()), default=0) + w
    height = 20 + max((y for _, y in pos.values()), default=0) + h
    parts = [f'<svg role="img" aria-labelledby="family-title" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
             '<title id="family-title">image family</title>']
    for n in nodes:
        parent = n.get("parent")
        if parent in pos:
            px, py = pos[parent]
            x, y = pos[n["image"]]
            parts.append(f'<path class="edge" d="M{px + 20} {py + h} V{y + h // 2} H{x}"/>')
    for n in nodes:
        x, y = pos[n["image"]]
        latest = n["latest"] or {}
        cls = ["node", f"s-{_e(latest.get('status', 'none'))}"] + (["stale"] if n["outdated"] else [])
        sub = f"{n['count']} image{'s' if n['count'] != 1 else ''}"
        if latest:
            sub += f", newest {latest.get('status')}"
        if n["outdated"]:
            sub += f", {n['outdated']} outdated"
        parts.append(
            f'<a href="images.html#name-{slug(n["image"])}"><rect class="{" ".join(cls)}" x="{x}" y="{y}" '
            f'width="{w}" height="{h}" rx="6"/><text x="{x + 10}" y="{y + 18}">{_e(n["image"])}'
            + (f' [{_e(", ".join(n["channels"]))}]' if n["channels"] else "")
            + f'</text><text x="{x + 10}" y="{y + 36}">{_e(sub)}</text></a>')
    parts.append("</svg>")
    return "".join(parts)


def _family_list(nodes: list[dict[str, Any]]) -> str:
    """The same family as nested text, for readers without SVG."""
    names = {n["image"] for n in nodes}
    kids: dict[str | None, list[dict[str, Any]]] = {}
    for n in nodes:
        kids.setdefault(n["parent"] if n["parent"] in names else None, []).append(n)

    def items(parent: str | None) -> str:
        out = []
        for n in kids.get(parent, []):
            v = n["validated"]
            late = f' <span class="outdated">{n["outdated"]} outdated</span>' if n["outdated"] else ""
            chans = f' channels: {_e(", ".join(n["channels"]))}' if n["channels"] else ""
            newest = (f" newest validated {_image_link(v['id'])}" if v
                      else ' <span class="muted">no validated image</span>')
            sub = items(n["image"])
            out.append(f'<li><a href="images.html#name-{slug(n["image"])}">{_e(n["image"])}</a>'
                       f' ({n["count"]} images){newest}{chans}{late}{f"<ul>{sub}</ul>" if sub else ""}</li>')
        return "".join(out)

    return f'<ul class="family">{items(None)}</ul>'


def _index(snap: Snapshot, images: list[Mapping[str, Any]]) -> str:
    nodes = _names(snap, images)
    runs = snap.get("nightly") or []
    last = runs[0]["doc"] if runs else None
    counts: dict[str, int] = {}
    for r in images:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no images yet"
    body = [f"<p>{len(images)} images: {_e(summary)}.</p>"]
    if last is not None:
        body.append(f"<p>Last nightly run: {_status(_run_outcome(last))} {_e(last.get('summary'))} "
                    f"(<a href=\"nightly.html\">all runs</a>)</p>")
    body.append("<h2>Family</h2>")
    body.append(f"<figure>{family_svg(nodes)}<figcaption class=\"muted\">Each box is an image name under "
                "its parent; a dashed border: some of its images are outdated.</figcaption></figure>"
                if nodes else "<p class=\"muted\">No images.</p>")
    body.append(_family_list(nodes))
    return _doc(snap, "Image registry", "\n".join(body))


# -- every image -------------------------------------------------------------------------------
def _images_page(snap: Snapshot, images: list[Mapping[str, Any]]) -> str:
    body = []
    for name in sorted({str(r["name"]) for r in images}):
        rows = sorted((r for r in images if r["name"] == name),
                      key=lambda r: (str(r.get("created") or ""), str(r["id"])), reverse=True)
        body.append(f'<h2 id="name-{slug(name)}">{_e(name)}</h2>')
        body.append(_table(
            ["image", "status", "created", "fingerprint", "channels", "parent", "notes"],
            ([_image_link(r["id"]), _status(r.get("status")), _e(r.get("created")),
              f'<code>{_e(str(r.get("fingerprint") or "").removeprefix("sha256:")[:12])}</code>',
              _e(", ".join(r.get("channels") or [])),
              _image_link((r.get("parent") or {}).get("id")) if r.get("parent") else "",
              _notes(r)] for r in rows)))
    if not images:
        body.append("<p class=\"muted\">No images.</p>")
    return _doc(snap, "Images", "\n".join(body))


def _why_revoked(r: Mapping[str, Any]) -> str:
    """": reason" of a revoked image's record (both registries keep it as `revoked_reason`)."""
    why = r.get("revoked_reason") or r.get("reason")
    return f": {_e(why)}" if why else ""


def _notes(r: Mapping[str, Any]) -> str:
    notes = []
    if r.get("outdated"):
        notes.append(f'<span class="outdated">outdated: {_e(r["outdated"])}</span>')
    if r.get("status") == "revoked":
        notes.append(f'<span class="mark">revoked</span>{_why_revoked(r)}')
    if r.get("stage"):
        notes.append(f"{_e(r['stage'])} by gc since {_e(r.get('stage_at'))}")
    return "; ".join(notes)


# -- channels --------------------------------------------------------------------------------------
def _channels_page(snap: Snapshot, by_id: Mapping[str, Any]) -> str:
    histories = snap.get("histories") or {}
    body = []
    for name in sorted(histories):
        for channel in sorted(histories[name]):
            moves = list(histories[name][channel])
            now = moves[-1].get("image_id") if moves else None
            body.append(f'<h2 id="ch-{slug(name)}-{slug(channel)}">{_e(name)} / {_e(channel)}</h2>')
            body.append(f"<p>Points at {_image_link(now, by_id=by_id)}; {len(moves)} move"
                        f"{'s' if len(moves) != 1 else ''}.</p>")
            body.append('<ol class="timeline" reversed>')
            seen: list[str] = []
            items = []
            for m in moves:
                kind = str(m.get("action") or "promote")
                marks = []
                if kind == "revoke":
                    marks.append('<span class="mark">revocation</span>')
                elif m.get("image_id") and m.get("image_id") in seen and m.get("image_id") != m.get("from"):
                    marks.append('<span class="mark">rollback</span>')
                if m.get("image_id"):
                    seen.append(str(m["image_id"]))
                why = f" &mdash; {_e(m['reason'])}" if m.get("reason") else ""
                items.append(
                    f"<li><time>{_e(m.get('at'))}</time> v{_e(m.get('version'))} {_e(kind)} {' '.join(marks)} "
                    f"{_image_link(m.get('from'), by_id=by_id)} &rarr; {_image_link(m.get('image_id'), by_id=by_id)} "
                    f"{_status(m.get('status'))} by {_e(m.get('user') or 'unknown')}{why}</li>")
            body.extend(reversed(items))
            body.append("</ol>")
    if not body:
        body.append("<p class=\"muted\">No channel has moved yet.</p>")
    return _doc(snap, "Channels", "\n".join(body))


# -- nightly -------------------------------------------------------------------------------------
def _run_outcome(doc: Mapping[str, Any]) -> str:
    if doc.get("ok"):
        return "done"
    return "failed" if doc.get("exit_code") else "unknown"


def _nightly_page(snap: Snapshot) -> str:
    runs = list(snap.get("nightly") or [])
    rows = []
    for run in runs:
        doc = run["doc"]
        steps = ", ".join(f"{s.get('step')} {s.get('outcome')}" for s in doc.get("steps") or [])
        links = " ".join(f'<a href="{_e(path)}">{_e(kind)}</a>' for kind, path in sorted((run.get("links") or {}).items()))
        rows.append([_e(doc.get("started")), _e(", ".join(doc.get("images_selected") or [])),
                     _status(_run_outcome(doc)), _e(doc.get("exit_code")), _e(doc.get("summary")),
                     _e(steps), links])
    body = (_table(["started", "images", "outcome", "exit", "summary", "steps", "report"], rows)
            if rows else "<p class=\"muted\">No nightly run has written a report yet.</p>")
    return _doc(snap, "Nightly runs", body)


# -- the fleet -------------------------------------------------------------------------------------
def image_standing(image_id: str, images: list[Mapping[str, Any]]) -> str:
    """current, outdated, revoked (or quarantined, corrupt, ...), or unknown (not in the
    registry) for an image a group runs."""
    rec = next((r for r in images if r["id"] == image_id), None)
    if rec is None:
        return "unknown"
    if rec.get("status") != "validated":
        return str(rec.get("status"))
    newest = _newest([r for r in images if r["name"] == rec["name"]], "validated")
    if rec.get("outdated") or (newest is not None and newest["id"] != rec["id"]):
        return "outdated"
    return "current"


def _fleet_page(snap: Snapshot, images: list[Mapping[str, Any]]) -> str:
    fleet = snap.get("fleet")
    if fleet is None:
        return _doc(snap, "Fleet", f"<p class=\"muted\">Target {_e(snap.get('target'))} has no "
                                   "auto-scaling groups.</p>")
    by_id = {str(r["id"]): r for r in images}
    rows = []
    for g in fleet:
        counts: dict[str, int] = {}
        for inst in g.get("instances") or []:
            counts[str(inst.get("image_id"))] = counts.get(str(inst.get("image_id")), 0) + 1
        runs = "<br>".join(f"{n} &times; {_image_link(i, by_id=by_id)} {_status(image_standing(i, images))}"
                           for i, n in sorted(counts.items())) or '<span class="muted">no instances</span>'
        size = f"{_e(g.get('desired'))} ({_e(g.get('min'))}&ndash;{_e(g.get('max'))})"
        rows.append([_e(g.get("group")), f"<code>{_e(g.get('asg'))}</code>", _e(g.get("image")),
                     _e(g.get("channel")), size, runs,
                     f'<span class="mark">{_e(g["error"])}</span>' if g.get("error") else ""])
    return _doc(snap, "Fleet", _table(
        ["group", "auto-scaling group", "image", "channel", "desired (min-max)", "instances run", "note"], rows))


# -- one image ------------------------------------------------------------------------------------
class Index:
    """What the image pages look up, computed once per render: records by id, each image's
    predecessor (the newest older image of its name), package lists, nightly diffs."""

    def __init__(self, snap: Snapshot, images: list[Mapping[str, Any]]) -> None:
        self.by_id = {str(r["id"]): r for r in images}
        self.manifests: Mapping[str, Any] = snap.get("manifests") or {}
        self.previous: dict[str, Mapping[str, Any]] = {}
        by_name: dict[str, list[Mapping[str, Any]]] = {}
        for r in images:
            by_name.setdefault(str(r["name"]), []).append(r)
        for rows in by_name.values():
            rows.sort(key=lambda r: (str(r.get("created") or ""), str(r["id"])))
            for older, newer in itertools.pairwise(rows):
                self.previous[str(newer["id"])] = older
        self.nightly: dict[str, Mapping[str, Any]] = {}
        for run in reversed(list(snap.get("nightly") or [])):  # oldest first: the newest report wins
            for row in run["doc"].get("images") or []:
                if row.get("image_id") and isinstance(row.get("packages"), dict):
                    self.nightly[str(row["image_id"])] = dict(row["packages"], previous_id=row.get("previous_id"))
        self._packages: dict[str, list[pkgdiff.Package] | None] = {}

    def packages(self, image_id: str) -> list[pkgdiff.Package] | None:
        if image_id not in self._packages:
            self._packages[image_id] = pkgdiff.packages_from_manifest(self.manifests.get(image_id) or {})
        return self._packages[image_id]

    def package_changes(self, image_id: str) -> tuple[Mapping[str, Any] | None, Any]:
        """(the differences to the image's predecessor, the predecessor's id): a nightly
        report's (security fixes marked) where one compared them, else from the manifests."""
        if image_id in self.nightly:
            return self.nightly[image_id], self.nightly[image_id].get("previous_id")
        prev = self.previous.get(image_id)
        if prev is None:
            return None, None
        old, new = self.packages(str(prev["id"])), self.packages(image_id)
        if old is None or new is None:
            return None, prev["id"]
        return pkgdiff.diff(old, new), prev["id"]


def waterfall(timings: Mapping[str, Any]) -> str:
    """Packer's steps one after the other, and Ansible's tasks inside the step that ran them,
    as bars on one time axis."""
    steps = [s for s in timings.get("packer_steps") or [] if isinstance(s, dict)]
    tasks = [t for t in timings.get("ansible_tasks") or [] if isinstance(t, dict)]
    total = sum(float(s.get("seconds") or 0) for s in steps) or sum(float(t.get("seconds") or 0) for t in tasks)
    if not total:
        return "<p class=\"muted\">No timings recorded.</p>"
    rows, at = [], 0.0
    play = next((i for i, s in enumerate(steps) if "ansible" in str(s.get("step", "")).lower()), None)

    def task_rows(start: float) -> None:
        for t in tasks:
            ts = float(t.get("seconds") or 0)
            name = f"{t['role']} : {t['task']}" if t.get("role") else str(t.get("task"))
            rows.append(_bar_row(f"ansible: {name}", start, ts, total, "task"))
            start += ts

    for i, s in enumerate(steps):
        secs = float(s.get("seconds") or 0)
        rows.append(_bar_row(f"packer: {s.get('step')}", at, secs, total, "step"))
        if i == play:
            task_rows(at)
        at += secs
    if play is None:  # no step names the provisioner: the tasks from the start
        task_rows(0.0)
    return _table(["step or task", "starts at", "seconds", "when"], rows,
                  caption=f"{len(steps)} Packer steps, {len(tasks)} Ansible tasks, {total:.0f}s in all")


def _bar_row(label: str, start: float, secs: float, total: float, kind: str) -> list[str]:
    left, width = 100 * start / total, max(0.2, 100 * secs / total)
    bar = (f'<div class="bar {kind}" style="margin-left:{left:.1f}%;width:{min(width, 100 - left):.1f}%" '
           f'title="{_e(label.strip())}: {secs:.1f}s"></div>')
    return [_e(label), f"{start:.1f}s", f"{secs:.1f}", f'<div class="track">{bar}</div>']


def _image_page(snap: Snapshot, rec: Mapping[str, Any], index: Index) -> str:
    m: Mapping[str, Any] = index.manifests.get(rec["id"]) or {}
    by_id = index.by_id
    body = [_table(["field", "value"], [
        ["name", _e(rec.get("name"))], ["status", _status(rec.get("status"))],
        ["created", _e(rec.get("created"))], ["fingerprint", f"<code>{_e(rec.get('fingerprint'))}</code>"],
        ["channels", _e(", ".join(rec.get("channels") or [])) or '<span class="muted">none</span>'],
        ["parent", _image_link((rec.get("parent") or {}).get("id"), 1, by_id) if rec.get("parent") else "none"],
        ["notes", _notes(rec) or '<span class="muted">-</span>'],
    ])]
    if rec.get("status") == "revoked":
        body.insert(0, f'<p class="mark">This image is revoked{_why_revoked(rec)}.'
                       " No channel, bake or rotation may use it.</p>")
    body.append("<h2>Provenance</h2>")
    prov = [[_e(k), f"<code>{_e(_flat(m[k]))}</code>"] for k in ("base", "tools", "git", "built_by", "accelerator")
            if k in m]
    body.append(_table(["input", "value"], prov) if prov else "<p class=\"muted\">No manifest.</p>")
    inputs = m.get("fingerprint_inputs")
    if isinstance(inputs, dict) and inputs:
        body.append(f"<details><summary>{len(inputs)} fingerprint inputs</summary>"
                    + _table(["input", "digest"], ([_e(k), f"<code>{_e(_flat(v))}</code>"]
                                                   for k, v in sorted(inputs.items()))) + "</details>")
    body.append("<h2>Validation</h2>")
    v = m.get("validation")
    if isinstance(v, dict):
        body.append(f"<p>{_status(v.get('status'))}: {_e(v.get('passed', 0))} passed, {_e(v.get('failed', 0))} failed, "
                    f"{_e(v.get('errors', 0))} errors, {_e(v.get('skipped', 0))} skipped.</p>")
        if v.get("failures"):
            body.append("<ul>" + "".join(f"<li>{_e(f)}</li>" for f in v["failures"]) + "</ul>")
    else:
        body.append("<p class=\"muted\">No validation recorded.</p>")
    for key, title in (("compliance", "Compliance"), ("attestation", "Attestation")):
        body.append(f"<h2>{title}</h2>")
        body.append(f"<p><code>{_e(_flat(m[key]))}</code></p>" if key in m
                    else f"<p class=\"muted\">No {title.lower()} recorded for this image.</p>")
    body.append("<h2>Packages</h2>")
    pkgs = index.packages(str(rec["id"]))
    body.append(f"<p>{len(pkgs)} packages installed (SBOM).</p>" if pkgs is not None
                else "<p class=\"muted\">No package list recorded.</p>")
    changes, prev_id = index.package_changes(str(rec["id"]))
    if changes is not None:
        rows = [[_e(c["source"]), _e(c["name"]), _e(c["kind"]), _e(c.get("old") or "-"), _e(c.get("new") or "-"),
                 '<span class="security">security</span>' if c.get("security") else ""]
                for c in changes.get("changes") or []]
        body.append(f"<p>Differences to {_image_link(prev_id, 1, by_id)}: {len(rows)} package"
                    f"{'s' if len(rows) != 1 else ''}, {changes.get('security', 0)} from the security suite.</p>")
        if rows:
            body.append(_table(["source", "package", "change", "old", "new", "fix"], rows))
    elif prev_id:
        body.append(f"<p class=\"muted\">{_image_link(prev_id, 1, by_id)} or this image has no package list.</p>")
    else:
        body.append("<p class=\"muted\">No earlier image of this name to compare with.</p>")
    body.append("<h2>Bake</h2>")
    timings = m.get("timings")
    body.append(waterfall(timings) if isinstance(timings, dict) else "<p class=\"muted\">No timings recorded.</p>")
    return _doc(snap, f"Image {rec['id']}", "\n".join(body), depth=1)


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    return str(value)
