"""Checks of the base image's own (roles base + hygiene), which its children inherit: the
journald limits, time synchronisation, the password rules (hashing rounds, strength checks),
automatic upgrades off, cloud-init's first-boot settings and the first-boot host key unit. sshd
hardening and hygiene are in tests/image/common/. One condition per test.

Everything is read from inside the guest through testinfra's `host` (run with --sudo).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

JOURNALD_DROPIN = "/etc/systemd/journald.conf.d/00-base.conf"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-base-hardening.conf"


def settings_of(text: str) -> dict[str, str]:
    """KEY=value lines of a systemd drop-in (sections and comments ignored)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("path", [JOURNALD_DROPIN, SSHD_DROPIN, "/etc/cloud/cloud.cfg.d/90-base.cfg",
                                  "/etc/systemd/system/base-ssh-host-keys.service"])
def test_base_file_is_root_owned_and_not_writable_by_others(host: Any, path: str) -> None:
    f = host.file(path)
    assert f.is_file and f.user == "root" and not f.mode & 0o022, (path, f.user, oct(f.mode))


@pytest.mark.parametrize(("key", "value"), [("Storage", "persistent"), ("SystemMaxUse", "200M"),
                                            ("MaxRetentionSec", "1month")])
def test_journald_limit(host: Any, key: str, value: str) -> None:
    assert settings_of(host.file(JOURNALD_DROPIN).content_string).get(key) == value


def test_journal_is_persistent(host: Any) -> None:
    assert host.file("/var/log/journal").is_directory


def test_timesyncd_is_active(host: Any) -> None:
    assert host.service("systemd-timesyncd").is_running


def test_first_boot_host_key_unit_enabled(host: Any) -> None:
    assert host.service("base-ssh-host-keys.service").is_enabled


@pytest.mark.parametrize(("key", "value"), [("SHA_CRYPT_MIN_ROUNDS", "5000"), ("SHA_CRYPT_MAX_ROUNDS", "50000")])
def test_login_defs_hashing_rounds(host: Any, key: str, value: str) -> None:
    lines = [line.split() for line in host.file("/etc/login.defs").content_string.splitlines()]
    assert [f[1] for f in lines if len(f) == 2 and f[0] == key] == [value]


def test_pam_checks_new_passwords_strength(host: Any) -> None:
    assert "pam_pwquality.so" in host.file("/etc/pam.d/common-password").content_string


def test_unattended_upgrades_absent(host: Any) -> None:
    assert not host.package("unattended-upgrades").is_installed


def test_apt_periodic_upgrades_off(host: Any) -> None:
    conf = host.run("apt-config dump APT::Periodic").stdout
    assert 'APT::Periodic::Unattended-Upgrade "0";' in conf, conf


def test_cloud_init_locale_is_c_utf8(host: Any) -> None:
    text = host.file("/etc/cloud/cloud.cfg.d/90-base.cfg").content_string
    assert re.search(r'^locale:\s*"?C\.UTF-8"?\s*$', text, re.MULTILINE), text


def test_host_keys_are_the_types_the_image_asks_for(host: Any) -> None:
    """cloud-init made this boot's host keys of its ssh_genkeytypes (base_ssh_host_key_types)
    and of no other type: no RSA or DSA key generation unless the image asks for it."""
    text = host.file("/etc/cloud/cloud.cfg.d/90-base.cfg").content_string
    match = re.search(r"^ssh_genkeytypes:\s*(\[.*\])\s*$", text, re.MULTILINE)
    assert match, text
    wanted = set(json.loads(match.group(1)))
    keys = host.run("find /etc/ssh -maxdepth 1 -name 'ssh_host_*_key' -printf '%f\\n'").stdout.split()
    assert {k.removeprefix("ssh_host_").removesuffix("_key") for k in keys} == wanted
