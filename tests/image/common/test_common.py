"""Checks that hold for every image: base packages and services, sshd hardening, and the
hygiene of a final image (no build keys, fresh host keys and machine-id, cloud-init finished,
no history, apt lists and caches empty). One condition per test (each shows up in the JUnit
file).

Everything is read from inside the guest through testinfra's `host` (run with --sudo).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

HOST_KEY_GLOB = "/etc/ssh/ssh_host_*_key"


def key_of(line: str) -> tuple[str, str]:
    """(type, base64 blob) of an authorized_keys or .pub line; options and comment ignored."""
    fields = line.split()
    for i, field in enumerate(fields[:-1]):
        if field.startswith(("ssh-", "ecdsa-", "sk-")):
            return field, fields[i + 1]
    raise ValueError(f"not an SSH public key line: {line!r}")


def key_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def find(host: Any, *args: str) -> list[str]:
    """Output lines of find(1) in the guest; a start path that does not exist finds nothing,
    any other error fails the test (an empty result must mean "nothing there")."""
    result = host.run("find " + " ".join(["%s"] * len(args)), *args)
    errors = [e for e in result.stderr.splitlines() if e and "No such file or directory" not in e]
    if result.rc != 0 and (errors or not result.stderr.strip()):
        pytest.fail(f"find {' '.join(args)}: exit {result.rc}: {result.stderr.strip()}")
    return [line for line in result.stdout.splitlines() if line]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd_settings(host: Any) -> dict[str, str]:
    """Effective sshd settings (`sshd -T`), keyword -> value."""
    out = host.check_output("/usr/sbin/sshd -T")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.fixture(scope="module")
def boot_time(host: Any) -> int:
    stat = host.file("/proc/stat").content_string
    match = re.search(r"^btime (\d+)$", stat, re.MULTILINE)
    assert match, "no btime in /proc/stat"
    return int(match.group(1))


@pytest.fixture(scope="module")
def host_keys(host: Any) -> dict[str, float]:
    """Private host keys -> mtime (epoch seconds)."""
    lines = find(
        host, "/etc/ssh", "-maxdepth", "1", "-name", "ssh_host_*_key", "-printf", r"%T@ %p\n"
    )
    return {path: float(mtime) for mtime, path in (line.split(" ", 1) for line in lines)}


@pytest.fixture(scope="module")
def validation_keys_file(host: Any, expect: dict[str, str]) -> str:
    user = host.user(expect["validation_user"])
    assert user.exists, f"validation user {expect['validation_user']} does not exist"
    return f"{user.home}/.ssh/authorized_keys"


@pytest.fixture(scope="module")
def machine_id(host: Any) -> str:
    return str(host.file("/etc/machine-id").content_string.strip())


# --- packages --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openssh-server", "systemd-timesyncd", "curl", "libpam-pwquality"])
def test_package_installed(host: Any, name: str) -> None:
    assert host.package(name).is_installed


@pytest.mark.parametrize("name", ["unattended-upgrades"])
def test_package_absent(host: Any, name: str) -> None:
    assert not host.package(name).is_installed


# --- services and sockets --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ssh", "systemd-timesyncd"])
def test_service_running(host: Any, name: str) -> None:
    assert host.service(name).is_running


@pytest.mark.parametrize("name", ["ssh", "systemd-timesyncd", "base-ssh-host-keys"])
def test_service_enabled(host: Any, name: str) -> None:
    assert host.service(name).is_enabled


@pytest.mark.parametrize("timer", ["apt-daily.timer", "apt-daily-upgrade.timer"])
def test_apt_timer_masked(host: Any, timer: str) -> None:
    """The image is immutable: nothing upgrades it in place."""
    assert host.run("systemctl is-enabled %s", timer).stdout.strip() == "masked"


@pytest.mark.parametrize("timer", ["apt-daily.timer", "apt-daily-upgrade.timer"])
def test_apt_timer_inactive(host: Any, timer: str) -> None:
    assert host.run("systemctl is-active %s", timer).stdout.strip() == "inactive"


@pytest.mark.parametrize("spec", ["tcp://22"])
def test_listening(host: Any, spec: str) -> None:
    assert host.socket(spec).is_listening


def test_cloud_init_finished_without_errors(host: Any) -> None:
    """cloud-init ran afresh at this boot (hygiene cleaned it) and reported no error."""
    result = host.run("timeout 300 cloud-init status --wait --long")
    assert "status: done" in result.stdout, result.stdout + result.stderr


def test_hostname_resolves(host: Any) -> None:
    hostname = host.check_output("hostname")
    assert host.run("getent hosts %s", hostname).rc == 0, hostname


# --- sshd ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("passwordauthentication", "no"),
        ("kbdinteractiveauthentication", "no"),
        ("permitrootlogin", "no"),
        ("permitemptypasswords", "no"),
        ("allowtcpforwarding", "no"),
        ("allowagentforwarding", "no"),
        ("compression", "no"),
        ("loglevel", "VERBOSE"),
        ("clientaliveinterval", "300"),
        ("clientalivecountmax", "2"),
        ("tcpkeepalive", "no"),
    ],
)
def test_sshd_effective_setting(sshd_settings: dict[str, str], keyword: str, value: str) -> None:
    assert sshd_settings.get(keyword) == value


# --- hygiene: keys ---------------------------------------------------------------------------


def test_validation_user_has_only_the_validation_key(
    host: Any, expect: dict[str, str], validation_keys_file: str
) -> None:
    """The build's key is gone; the only key is the one injected at this boot."""
    keys_file = host.file(validation_keys_file)
    assert keys_file.exists, validation_keys_file
    keys = [key_of(line) for line in key_lines(keys_file.content_string)]
    assert keys == [key_of(expect["validation_pubkey"])]


def test_no_other_authorized_keys(
    host: Any, expect: dict[str, str], validation_keys_file: str
) -> None:
    """No other authorized_keys file under /root or /home holds a key from anywhere else.

    cloud-init writes /root/.ssh/authorized_keys at every instance's first boot: empty, or the
    datasource's keys behind a "Please login as" command. That file is of this boot; a file
    holding any key but this boot's validation key is a leftover.
    """
    allowed = key_of(expect["validation_pubkey"])
    found = set(find(host, "/root", "/home", "-name", "authorized_keys*")) - {validation_keys_file}
    leftovers = {}
    for path in sorted(found):
        lines = key_lines(host.file(path).content_string)
        foreign = [line for line in lines if _key_or_none(line) != allowed]
        if foreign:
            leftovers[path] = foreign
    assert leftovers == {}


def _key_or_none(line: str) -> tuple[str, str] | None:
    try:
        return key_of(line)
    except ValueError:
        return None


def test_host_keys_present(host_keys: dict[str, float]) -> None:
    assert "/etc/ssh/ssh_host_ed25519_key" in host_keys, sorted(host_keys)


def test_host_keys_created_at_this_boot(host_keys: dict[str, float], boot_time: int) -> None:
    """The build VM's host keys were removed: every key is younger than this boot."""
    assert host_keys, f"no {HOST_KEY_GLOB}"
    older = {path: mtime for path, mtime in host_keys.items() if mtime < boot_time}
    assert older == {}, f"host keys older than the boot at {boot_time}"


# --- hygiene: identity, history, logs, caches ------------------------------------------------


def test_machine_id_is_fresh_and_valid(machine_id: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id), repr(machine_id)


def test_journal_has_only_this_machines_directory(host: Any, machine_id: str) -> None:
    """The build VM's journal (kept under its machine id) is not in the image."""
    entries = find(host, "/var/log/journal", "-mindepth", "1", "-maxdepth", "1", "-printf", r"%f\n")
    assert sorted(set(entries) - {machine_id}) == []


def test_no_shell_history(host: Any) -> None:
    found = find(host, "/root", "/home", "-maxdepth", "2", "-name", ".bash_history")
    assert found == []


def test_apt_lists_empty(host: Any) -> None:
    found = find(host, "/var/lib/apt/lists", "-type", "f", "-name", "*_Packages*")
    assert found == []


def test_apt_lists_look_stale(host: Any) -> None:
    """No update stamp and an old lists directory: the next apt user (a child image's bake,
    whose roles ask for lists younger than an hour) updates before it installs."""
    assert not host.file("/var/lib/apt/periodic/update-success-stamp").exists
    assert host.file("/var/lib/apt/lists").mtime.year < 2001


def test_apt_binary_caches_gone(host: Any) -> None:
    """apt's package caches go with the lists (a child's build restores its parent's
    index, source cache included, and hygiene removes it again)."""
    assert find(host, "/var/cache/apt", "-maxdepth", "1", "-name", "*.bin") == []


def test_apt_cache_empty(host: Any) -> None:
    found = find(host, "/var/cache/apt/archives", "-type", "f", "-name", "*.deb")
    assert found == []


# --- hygiene: nothing of the build VM's own boot ---------------------------------------------
# A local build VM boots the disk's kernel directly and gets its user, key and sudo rule as
# systemd credentials (goldenimage/adapters/directboot.py); its shutdown removes them.
BUILD_SUDOERS = "/etc/sudoers.d/90-goldenimage-build"
BUILD_USER_GECOS = "goldenimage build"


def test_no_sudo_rule_of_the_build(host: Any) -> None:
    assert not host.file(BUILD_SUDOERS).exists


def test_no_build_user_account(host: Any) -> None:
    """The build user is gone; the validation user is this boot's (cloud-init's) own."""
    entries = host.check_output("getent passwd").splitlines()
    assert [e for e in entries if e.split(":")[4:5] == [BUILD_USER_GECOS]] == []
