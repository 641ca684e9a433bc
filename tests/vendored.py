"""Requirements as a user brings them, without Galaxy: a role and a collection as local
tarballs under vendor/, named in requirements.yml.

- role `osvars` (the pattern popular Galaxy roles use): includes `vars/<os_family>.yml` with
  `first_found` on `ansible_facts['os_family']`, then writes /etc/osvars.conf from them;
- collection `goldenimage_test.tools` VERSION: a filter `shout` (upper case + "!").
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tarfile
from pathlib import Path

ROLE_TASKS = """---
- name: Include OS-specific variables
  ansible.builtin.include_vars: "{{ lookup('ansible.builtin.first_found', osvars_params) }}"
  vars:
    osvars_params:
      files:
        - "{{ ansible_facts['os_family'] }}.yml"
        - default.yml
      paths:
        - "{{ role_path }}/vars"

- name: Write what the OS family chose
  ansible.builtin.copy:
    dest: /etc/osvars.conf
    content: "family={{ ansible_facts['os_family'] }} packager={{ osvars_packager }}\\n"
    owner: root
    group: root
    mode: "0644"
"""

FILTER = '''
def shout(text):
    return str(text).upper() + "!"


class FilterModule:
    def filters(self):
        return {"shout": shout}
'''


def role_tarball(dest: Path) -> Path:
    src = dest / "build" / "osvars"
    for sub in ("tasks", "vars", "meta"):
        (src / sub).mkdir(parents=True, exist_ok=True)
    (src / "tasks" / "main.yml").write_text(ROLE_TASKS)
    (src / "vars" / "Debian.yml").write_text("---\nosvars_packager: apt\n")
    (src / "vars" / "RedHat.yml").write_text("---\nosvars_packager: dnf\n")
    (src / "vars" / "default.yml").write_text("---\nosvars_packager: unknown\n")
    (src / "meta" / "main.yml").write_text(
        "---\ngalaxy_info:\n  author: vendor\n  description: OS-specific variables from facts\n  license: MIT\n"
        "  min_ansible_version: '2.15'\n  platforms: [{name: Debian, versions: [bookworm]}]\ndependencies: []\n")
    out = dest / "vendor" / "osvars-1.0.0.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)

    def fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:  # the same bytes every time
        tar.add(src, arcname="osvars", filter=fixed)
    return out


def collection_tarball(dest: Path, version: str = "1.0.0") -> Path:
    src = dest / "build" / f"tools-{version}"
    (src / "plugins" / "filter").mkdir(parents=True, exist_ok=True)
    (src / "galaxy.yml").write_text(
        f"namespace: goldenimage_test\nname: tools\nversion: {version}\nreadme: README.md\n"
        "authors: [vendor]\nlicense: [MIT]\n")
    (src / "README.md").write_text("test collection\n")
    (src / "meta").mkdir(exist_ok=True)
    (src / "meta" / "runtime.yml").write_text("---\nrequires_ansible: '>=2.15'\n")
    (src / "plugins" / "filter" / "shout.py").write_text(FILTER)
    (dest / "vendor").mkdir(parents=True, exist_ok=True)
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    subprocess.run([str(galaxy), "collection", "build", str(src), "--output-path", str(dest / "vendor"), "--force"],
                   check=True, capture_output=True)
    return dest / "vendor" / f"goldenimage_test-tools-{version}.tar.gz"


def vendor(project: Path, collection_version: str | None = "1.0.0") -> None:
    """The tarballs under project/vendor/ and a requirements.yml naming them (no collection
    with `collection_version=None`)."""
    role = role_tarball(project)
    text = f"---\nroles:\n  - src: ./{role.relative_to(project)}\n    name: osvars\n"
    if collection_version is not None:
        coll = collection_tarball(project, collection_version)
        text += f"collections:\n  - name: ./{coll.relative_to(project)}\n    type: file\n"
    (project / "requirements.yml").write_text(text)
