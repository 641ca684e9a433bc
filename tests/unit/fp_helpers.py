"""A small project tree (packer/, playbooks/, roles/, inventories/) for fingerprint tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from goldenimage.store import ImageRecord, LocalStore

PLUGINS = """\
packer {
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
    ansible = {
      version = ">= 1.1.1"
      source  = "github.com/hashicorp/ansible"
    }
  }
}
"""

VARIABLES = """\
variable "disk_size" {
  type    = string
  default = "4G"
  validation {
    condition     = can(regex("^[0-9]+[MG]$", var.disk_size))
    error_message = "Size like 4G."
  }
}

variable "cpus" {
  type    = number
  default = 2
}

variable "base_image" {
  type = string
}
"""

SOURCES = """\
source "qemu" "debian" {
  iso_url      = var.base_image
  disk_image   = true
  disk_size    = var.disk_size
  cpus         = var.cpus
  boot_command = ["<enter>", "<wait>"]
  ssh_username = "debian"
}
"""

BUILD = """\
build {
  sources = ["source.qemu.debian"]

  provisioner "ansible" {
    playbook_file = "${path.root}/../playbooks/web.yml"
    extra_arguments = ["--extra-vars", "web_port=80"]
  }

  provisioner "shell" {
    script = "${path.root}/scripts/cleanup.sh"
  }
}
"""

PLAYBOOK = """\
- name: web image
  hosts: all
  become: true
  roles:
    - common
    - role: web
      vars:
        web_port: 80
"""

FILES: dict[str, str] = {
    "packer/plugins.pkr.hcl": PLUGINS,
    "packer/variables.pkr.hcl": VARIABLES,
    "packer/sources.pkr.hcl": SOURCES,
    "packer/build.pkr.hcl": BUILD,
    "packer/local.pkrvars.hcl": 'cpus = 2\ndisk_size = "4G"\n',
    "packer/scripts/cleanup.sh": "#!/bin/sh\nrm -f /etc/ssh/ssh_host_*\n",
    "playbooks/web.yml": PLAYBOOK,
    "playbooks/other.yml": "- hosts: all\n  roles: [unused]\n",
    "roles/common/tasks/main.yml": ("- name: base packages\n  ansible.builtin.apt:\n    name: curl\n"),
    "roles/common/defaults/main.yml": "common_enabled: true\n",
    "roles/web/tasks/main.yml": (
        "- name: nginx\n  ansible.builtin.apt:\n    name: nginx\n"
        "- name: tls\n  ansible.builtin.include_role:\n    name: tls\n"
    ),
    "roles/web/meta/main.yml": "dependencies:\n  - role: ntp\n",
    "roles/web/templates/site.conf.j2": "listen {{ web_port }};\n",
    "roles/web/files/healthcheck.sh": "#!/bin/sh\nexit 0\n",
    "roles/ntp/tasks/main.yml": "- ansible.builtin.apt:\n    name: chrony\n",
    "roles/tls/tasks/main.yml": "- ansible.builtin.debug:\n    msg: tls\n",
    "roles/unused/tasks/main.yml": "- ansible.builtin.debug:\n    msg: not used by web\n",
    "inventories/local/hosts.yml": "all:\n  children:\n    web:\n      hosts:\n        default:\n",
    "inventories/local/group_vars/all.yml": "ntp_server: pool.ntp.org\n",
    "inventories/local/group_vars/web.yml": "web_port: 80\n",
    "inventories/local/goldenimage.yml": (
        "target: local\n"
        "images:\n"
        "  web:\n    playbook: playbooks/web.yml\n    groups: [web]\n"
        "  other:\n    playbook: playbooks/other.yml\n"
        "base:\n  suite: bookworm\n"
        "qemu:\n  cpus: 2\n"
        "trust:\n  unsigned: allow\n"  # `register` puts images without an attestation
    ),
}

EXECUTABLE = ("packer/scripts/cleanup.sh", "roles/web/files/healthcheck.sh")

EXTRA = {"base:image": "sha256:" + "1" * 64, "tool:packer": "1.11.2", "tool:ansible-core": "2.19.14"}


def write(root: Path, rel: str, text: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def make_project(root: Path, files: dict[str, str] | None = None) -> Path:
    for rel, text in (files or FILES).items():
        write(root, rel, text)
    for rel in EXECUTABLE:
        if (root / rel).exists():
            os.chmod(root / rel, 0o755)
    return root


def register(
    store: LocalStore,
    image_id: str,
    status: str = "validated",
    name: str = "web",
    *,
    fingerprint: str = "f" * 64,
    manifest: dict[str, Any] | None = None,
    env: str = "local",
) -> ImageRecord:
    """Put an image into `store` the way the bake does (files moved in, catalog indexed)."""
    files = store.root / "work" / image_id
    files.mkdir(parents=True)
    (files / "disk.qcow2").write_bytes(b"qcow")
    rec = ImageRecord(
        id=image_id,
        name=name,
        env=env,
        fingerprint=fingerprint,
        created="2026-11-26T08:00:00Z",
        status=status,
        artifact="disk.qcow2",
    )
    doc = {
        "id": image_id,
        "name": name,
        "env": env,
        "fingerprint": fingerprint,
        "created": rec.created,
        "artifact": rec.artifact,
        **(manifest or {}),
    }
    return store.put(rec, doc, files)


def count_hcl_parses(monkeypatch: Any) -> list[str]:
    """The names of the templates fingerprint parses from now on (an empty per-test cache
    first); `monkeypatch` puts everything back."""
    from goldenimage import fingerprint

    seen: list[str] = []
    real = fingerprint.normalise_hcl

    def counting(text: str, name: str) -> str:
        seen.append(name)
        return real(text, name)

    monkeypatch.setattr(fingerprint, "_hcl_digests", {})
    monkeypatch.setattr(fingerprint, "normalise_hcl", counting)
    return seen
