"""`invoke image.new --image NAME [--parent P]`: a new image that bakes and validates on the first try.

Writes the image's playbook (gathering the minimal fact subset that roles from Galaxy
expect), a role of its own in the project's style (role-prefixed variables, a master switch,
`meta/argument_specs.yml`, fully qualified `ansible.builtin` modules), an image suite with one
example check, and its entry in the environment's settings (inserted under `images:`, the
rest of the file untouched). Nothing is overwritten: a name or file that exists is refused,
and if the settings do not load afterwards every file written is taken back.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import ConfigError, GoldenImageError
from .fsutil import atomic_write_bytes
from .progress import Reporter
from .settings import load_environment

Result = dict[str, Any]
NAME = re.compile(r"^[a-z][a-z0-9-]*$")

PLAYBOOK = """---
# The {name} image{on}. The bake passes goldenimage_image_name, goldenimage_fingerprint and
# goldenimage_build_time as extra vars. Facts: the minimal subset (distribution, OS family,
# Python, ...) that most roles from Galaxy read; `gather_subset: [all]` for more, or
# `gather_facts: false` if no role needs any (each gathering costs seconds under emulation).
- name: {title} image
  hosts: all
  become: true
  gather_facts: true
  gather_subset: [min]
  roles:
    - role: {role}
    - role: hygiene
"""

TASKS = """---
# An example that reads facts (the playbook gathers the minimal subset): replace it.
- name: Write the {name} release file
  ansible.builtin.copy:
    dest: "{{{{ {var}_release_file }}}}"
    content: |
      {{{{ {var}_release_text }}}} on {{{{ ansible_facts['distribution'] }}}} {{{{ ansible_facts['distribution_major_version'] }}}}
    owner: root
    group: root
    mode: "0644"
  when: {var}_enabled | bool
"""

DEFAULTS = """---
{var}_enabled: true
{var}_release_file: /etc/{name}-release
{var}_release_text: {name}
"""

META = """---
galaxy_info:
  author: you
  description: The {name} image's own configuration.
  license: Apache-2.0
  min_ansible_version: "2.15"
  platforms:
    - name: Debian
      versions: [bookworm]
dependencies: []
"""

SPECS = """---
argument_specs:
  main:
    short_description: The {name} image's own configuration.
    description:
      - Writes the image's release file, an example to replace with what {name} needs.
    author: you
    options:
      {var}_enabled:
        type: bool
        default: true
        description: Master switch; false skips every task of the role.
      {var}_release_file:
        type: str
        default: /etc/{name}-release
        description: Where the release file goes.
      {var}_release_text:
        type: str
        default: {name}
        description: What the release file says before the distribution.
"""

SUITE = '''"""Checks of the {name} image's own (tests/image/common/ and its ancestors' run too).
One condition per test; `host` is testinfra's view of the booted image."""

from __future__ import annotations

from typing import Any


def test_{var}_release_file_names_the_image_and_the_distribution(host: Any) -> None:
    release = host.file("/etc/{name}-release")
    assert release.is_file and release.mode == 0o644
    assert release.content_string.strip() == "{name} on Debian 12"
'''


def new_image(env_name: str, name: str | None, parent: str | None, reporter: Reporter,
              *, root: Path | None = None) -> Result:
    env = load_environment(env_name, root)
    if not name:
        raise ConfigError("image.new: give the new image's name (--image db)")
    if not NAME.match(name):
        raise ConfigError(f"image.new: {name!r}: image names are [a-z][a-z0-9-]*")
    if name in env.settings.images:
        raise ConfigError(f"{env.rel(env.settings_file)}: field images.{name}: image {name!r} exists already")
    if parent is None and "base" in env.settings.images:
        parent = "base"
    if parent is not None and parent not in env.settings.images:
        raise ConfigError(f"--parent: no image {parent!r} in {env.rel(env.settings_file)} "
                          f"(images: {', '.join(sorted(env.settings.images))})")
    var = name.replace("-", "_")
    files = {
        Path("playbooks") / f"{name}.yml": PLAYBOOK.format(
            name=name, title=name.capitalize(), role=name, on=f", baked on the {parent} image" if parent else ""),
        Path("roles") / name / "tasks" / "main.yml": TASKS.format(name=name, var=var),
        Path("roles") / name / "defaults" / "main.yml": DEFAULTS.format(name=name, var=var),
        Path("roles") / name / "meta" / "main.yml": META.format(name=name),
        Path("roles") / name / "meta" / "argument_specs.yml": SPECS.format(name=name, var=var),
        Path("tests") / "image" / name / f"test_{var}.py": SUITE.format(name=name, var=var),
    }
    taken = [str(p) for p in files if (env.root / p).exists()] + (
        [f"roles/{name}"] if (env.root / "roles" / name).exists() else [])
    if taken:
        raise ConfigError(f"image.new: {taken[0]} exists already: nothing written")
    settings = env.settings_file
    before = settings.read_bytes()
    text = before.decode()
    m = re.search(r"^images:[ \t]*(#.*)?\n", text, flags=re.MULTILINE)
    if m is None:
        raise ConfigError(f"{env.rel(settings)}: no top-level `images:` mapping to add {name!r} to")
    entry = f"  {name}:\n    playbook: playbooks/{name}.yml\n" + (f"    parent: {parent}\n" if parent else "")
    written: list[Path] = []
    try:
        for rel, content in files.items():
            path = env.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, content.encode())
            written.append(path)
        atomic_write_bytes(settings, (text[:m.end()] + entry + text[m.end():]).encode())
        load_environment(env_name, env.root).image(name)  # the settings still load, with the new image
    except (GoldenImageError, OSError):
        atomic_write_bytes(settings, before)
        for path in written:
            path.unlink(missing_ok=True)
        for d in sorted({p.parent for p in written}, key=lambda p: len(p.parts), reverse=True):
            for up in (d, *d.parents):
                if up == env.root or not up.is_relative_to(env.root):
                    break
                try:
                    up.rmdir()  # only what is left empty
                except OSError:
                    break
        raise
    return {"env": env.name, "image": name, "parent": parent, "settings": env.rel(settings),
            "files": [str(p) for p in files], "next": f"invoke bake --env {env.name} --image {name}"}


def human_new(r: Result) -> list[str]:
    on = f" on {r['parent']}" if r["parent"] else ""
    return [f"image {r['image']}{on}: added to {r['settings']}", *(f"  {f}" for f in r["files"]),
            f"next: {r['next']}"]
