"""The compliance audit's scanner: Lynis from this host's Debian package, brought into the
booted validation VM (or instance) for one run and never installed into the artifact.

The local validation boots the final image through a throw-away overlay, so nothing the
audit writes reaches the qcow2; an instance validating an AMI is terminated afterwards. The
audit runs over the validation's own SSH connection: Lynis's program, include files and
database go in as one tarball on ssh's standard input, into a directory under /tmp of the
guest, and the report comes back on standard output.

Two measured costs under emulation shape the run:
- Lynis parses its profile line by line with a shell loop, twice: the Debian
  `default.prf` (156 settings) costs ~12 s each time in a TCG guest. The audit uses a short
  profile written here: the settings it needs and the Linux sysctl expectations of the
  default profile (KRNL-6000), nothing for other systems;
- every test pays emulated process starts, so only the image's chosen test groups run
  (`--tests-from-group`, `ComplianceSpec.groups`), and no plugins.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import compliance
from ..errors import MissingToolError, OperationFailed

if TYPE_CHECKING:
    from ..progress import Reporter
    from ..settings import ComplianceSpec

PROGRAM = Path("/usr/sbin/lynis")
SHARE = Path("/usr/share/lynis")  # include/ and db/
DEFAULT_PROFILE = Path("/etc/lynis/default.prf")
HINT = "apt-get install lynis (the compliance audit's scanner, Debian's package)"
REMOTE = "/tmp/goldenimage-audit"  # in the audited machine (the validation boot's overlay)

PROFILE_SETTINGS = (
    "colors=no", "error-on-warnings=no", "machine-role=server", "pause-between-tests=0", "quick=yes",
    "refresh-repositories=no", "show-tool-tips=no", "skip-plugins=yes", "skip-upgrade-test=yes",
    "test-scan-mode=full", "verbose=no",
)
LINUX_SYSCTL = re.compile(r"^config-data=sysctl;(fs|kernel|net\.core|net\.ipv4|net\.ipv6|dev)\.")


@dataclass(frozen=True)
class Run:
    """One audit's raw result: the report (key=value lines), Lynis's log, the seconds the
    audit took in the guest (copy, scan and report), and the scanner's version."""

    report: str
    log: str
    seconds: float
    version: str


def version() -> str:
    """The installed Lynis's version, read from the program (no process start)."""
    if not PROGRAM.is_file():
        raise MissingToolError(f"lynis not found at {PROGRAM}: {HINT}")
    m = re.search(r'^\s*PROGRAM_VERSION="([^"]+)"', PROGRAM.read_text(errors="replace"), re.M)
    if m is None:
        raise MissingToolError(f"{PROGRAM}: no PROGRAM_VERSION in it: {HINT}")
    return m[1]


def profile(groups: list[str]) -> str:
    """The short profile: PROFILE_SETTINGS, and the default profile's Linux sysctl lines
    when the audit runs kernel_hardening (the only group that reads them)."""
    lines = [line for line in DEFAULT_PROFILE.read_text(errors="replace").splitlines()
             if "kernel_hardening" in groups and LINUX_SYSCTL.match(line)]
    return "\n".join(["# goldenimage's audit profile (see goldenimage/adapters/lynis.py)",
                      *PROFILE_SETTINGS, *lines]) + "\n"


def bundle(groups: list[str]) -> bytes:
    """A gzipped tarball of the scanner laid out as Lynis runs it from its own directory
    (`--usecwd`): lynis, include/, db/, an empty plugins/ and the short profile, owned by
    root and not writable by others (Lynis refuses include files that are). MissingToolError
    when the program is not there (`version`)."""
    version()
    return _tarball(groups)


def _tarball(groups: list[str]) -> bytes:
    """`bundle` once the program is known to be there (`version` read it)."""
    for need in (SHARE / "include", SHARE / "db", DEFAULT_PROFILE):
        if not need.exists():
            raise MissingToolError(f"lynis is incomplete: {need} is missing: {HINT}")
    buf = io.BytesIO()

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode &= 0o750 if info.isdir() or info.name.endswith("/lynis") or info.name == "lynis" else 0o640
        return info

    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(PROGRAM, arcname="lynis", filter=owned)
        tar.add(SHARE / "include", arcname="include", filter=owned)
        tar.add(SHARE / "db", arcname="db", filter=owned)
        for name, data, mode in (("plugins", None, 0o750), ("audit.prf", profile(groups).encode(), 0o640)):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, int(time.time())
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def audit_script(groups: list[str], where: str = REMOTE) -> str:
    """The shell script the audited machine runs as root: unpack the tarball from stdin into
    `where`, audit the chosen groups, print the report on stdout (exit 3 and Lynis's last
    lines on stderr when it wrote none); the log stays in `where`."""
    report, log, q = f"{where}/report.dat", f"{where}/lynis.log", shlex.quote
    audit = (f"cd {q(where)} && ./lynis audit system --usecwd --no-colors --quick --quiet "
             f"--profile {q(where + '/audit.prf')} --plugindir {q(where + '/plugins')} "
             f"--tests-from-group {q(' '.join(groups))} "
             f"--report-file {q(report)} --logfile {q(log)} >{q(where + '/out.txt')} 2>&1")
    return (f"rm -rf {q(where)} && mkdir -m 0700 {q(where)} && tar -xzf - -C {q(where)} && "
            f"{{ {audit}; code=$?; }}; "
            f"if [ -s {q(report)} ]; then cat {q(report)}; else tail -n 5 {q(where + '/out.txt')} >&2; exit 3; fi; "
            f"exit $code")


# runs a root shell script on the audited machine, with bytes on its stdin
Execute = Callable[[str, bytes], "subprocess.CompletedProcess[bytes]"]


def run(ssh_config: Path, host: str, groups: list[str], *, timeout: float = 1800) -> Run:
    """Audit the machine behind `host` of `ssh_config` (its user may sudo without a
    password, as the validation user does). OperationFailed, naming what the guest said,
    when Lynis could not produce a report."""
    def ssh(script: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(["ssh", "-F", str(ssh_config), host, "sudo -n sh -c " + shlex.quote(script)],
                                  input=data, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise OperationFailed(f"the lynis audit on the image took over {timeout:.0f}s") from None

    return run_with(ssh, groups)


def run_with(execute: Execute, groups: list[str], where: str = REMOTE) -> Run:
    """`run` through any root shell on the audited machine (`execute`)."""
    scanner = version()  # read once: it checks the program is there, and the Run records it
    payload = _tarball(groups)
    started = time.monotonic()
    res = execute(audit_script(groups, where), payload)
    if res.returncode != 0 or not res.stdout.strip():
        said = res.stderr.decode(errors="replace").strip().splitlines()
        raise OperationFailed(f"the lynis audit on the image failed (exit {res.returncode}): "
                              f"{' / '.join(said[-3:]) or 'no report'}")
    seconds = time.monotonic() - started
    log = execute(f"cat {shlex.quote(where + '/lynis.log')}", b"").stdout.decode(errors="replace")
    return Run(res.stdout.decode(errors="replace"), log, round(seconds, 1), scanner)


REPORT_FILE = compliance.REPORT_FILE
LOG_FILE = "lynis.log"


def audit_image(ssh_config: Path, host: str, spec: ComplianceSpec, work: Path, reporter: Reporter) -> dict[str, Any]:
    """Audit the booted image with `spec`'s groups and judge it by `spec`: the manifest's
    `compliance` (compliance.as_manifest), its report and log written into `work`. The top
    findings and the verdict are said in the output."""
    reporter.step(f"compliance audit: lynis, groups {', '.join(spec.groups)}")
    done = run(ssh_config, host, list(spec.groups))
    try:
        audit = compliance.parse_report(done.report)
    except ValueError as exc:
        raise OperationFailed(f"the lynis audit on the image: {exc}") from None
    work.mkdir(parents=True, exist_ok=True)
    (work / REPORT_FILE).write_text(done.report)
    (work / LOG_FILE).write_text(done.log)
    failures = compliance.evaluate(audit, spec.min_score, spec.must_pass)
    result = compliance.as_manifest(
        audit, min_score=spec.min_score, must_pass=spec.must_pass, failures=failures, report=REPORT_FILE,
        report_sha256=hashlib.sha256(done.report.encode()).hexdigest(), seconds=done.seconds)
    reporter.info(f"    compliance: {compliance.index_text(f'lynis {audit.version}', audit.score, spec.min_score)}, "
                  f"{len(audit.executed)} tests, {len(audit.warnings)} warnings, "
                  f"{len(audit.suggestions)} suggestions, {done.seconds:.1f}s")
    for line in compliance.top(audit, 5):
        reporter.info(f"      {line}")
    for line in failures:
        reporter.warn(line)
    return result
