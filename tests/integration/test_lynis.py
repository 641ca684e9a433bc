"""The audit's scanner for real, without a VM: the tarball `adapters.lynis` builds from this
host's Debian package, unpacked and run by the very script the validation boot runs (here in
a root shell of this host, into a temporary directory), and its report read by the gate."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from goldenimage import compliance
from goldenimage.adapters import lynis
from goldenimage.errors import MissingToolError, OperationFailed

pytestmark = pytest.mark.integration


def local_root(script: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", script], input=data, capture_output=True, timeout=600)


def test_the_bundle_is_lynis_laid_out_to_run_from_its_directory() -> None:
    with tarfile.open(fileobj=io.BytesIO(lynis.bundle(["ssh"])), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        prf = tar.extractfile("audit.prf").read().decode()  # type: ignore[union-attr]
    assert {"lynis", "include/functions", "include/tests_ssh", "db/languages/en", "plugins"} <= set(members)
    assert all(m.uid == 0 and m.gid == 0 and not m.mode & 0o022 for m in members.values())
    assert members["lynis"].mode & 0o100 and members["plugins"].isdir()
    assert "skip-plugins=yes" in prf and "config-data=sysctl" not in prf  # short: ssh reads no sysctl lines
    with tarfile.open(fileobj=io.BytesIO(lynis.bundle(["kernel_hardening"])), mode="r:gz") as tar:
        prf = tar.extractfile("audit.prf").read().decode()  # type: ignore[union-attr]
    assert "config-data=sysctl;kernel.kptr_restrict;" in prf and "security.bsd" not in prf


def test_a_real_audit_through_the_validation_script(tmp_path: Path) -> None:
    done = lynis.run_with(local_root, ["file_permissions", "shells"], where=str(tmp_path / "audit"))
    audit = compliance.parse_report(done.report)
    assert audit.version == lynis.version() == done.version
    assert audit.groups == ("file_permissions", "shells") and "SHLL-6211" in audit.executed
    assert audit.score is not None and 0 <= audit.score <= 100
    assert "Lynis ended successfully" in done.log or "Program ended successfully" in done.log
    assert compliance.evaluate(audit, audit.score, []) == []
    if audit.score < 100:
        assert compliance.evaluate(audit, audit.score + 1, []) == [
            f"compliance: lynis hardening index {audit.score} is under the minimum {audit.score + 1}"]


def test_an_audit_that_writes_no_report_fails_naming_what_the_machine_said(tmp_path: Path) -> None:
    def broken(script: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return local_root(script, data[: len(data) // 2])  # a tarball cut short: tar fails

    with pytest.raises(OperationFailed, match=r"the lynis audit on the image failed \(exit 2\): .*gzip|tar"):
        lynis.run_with(broken, ["ssh"], where=str(tmp_path / "audit"))


def test_no_lynis_on_the_host_is_a_setup_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lynis, "PROGRAM", tmp_path / "lynis")
    with pytest.raises(MissingToolError, match=r"lynis not found at .*: apt-get install lynis") as err:
        lynis.bundle(["ssh"])
    assert err.value.exit_code == 2
