"""A tiny apt archive in a directory, written by the tests themselves (no dpkg-scanpackages):
dists/<suite>/Release (or a clearsigned-looking InRelease) and
dists/<suite>/<component>/binary-<arch>/Packages.gz|.xz, served over file:// or HTTP."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import lzma
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

Pkg = tuple[str, str, str, str]  # name, version, arch, source

BASE_PACKAGES: list[Pkg] = [
    ("openssl", "3.0.14-1~deb12u2", "amd64", "openssl"),
    ("libssl3", "3.0.14-1~deb12u2", "amd64", "openssl"),
    ("libc6", "2.36-9+deb12u7", "amd64", "glibc"),
    ("tzdata", "2024a-0+deb12u1", "all", "tzdata"),
    ("sudo", "1.9.13p3-1+deb12u1", "amd64", "sudo"),
]


def packages_text(pkgs: list[Pkg]) -> str:
    paras = []
    for name, version, arch, source in pkgs:
        src = f"Source: {source}\n" if source != name else ""
        paras.append(f"Package: {name}\n{src}Version: {version}\nArchitecture: {arch}\n"
                     f"Maintainer: Debian <debian@example.org>\nDescription: {name}\n")
    return "\n".join(paras)


def write_suite(root: Path, suite: str, pkgs: list[Pkg], date: str, *, inrelease: bool = False,
                compress: str = "gz", arch: str = "amd64") -> None:
    d = root / "dists" / suite
    idx = d / "main" / f"binary-{arch}"
    idx.mkdir(parents=True, exist_ok=True)
    for old in idx.glob("Packages*"):
        old.unlink()
    text = packages_text(pkgs).encode()
    if compress == "gz":
        (idx / "Packages.gz").write_bytes(gzip.compress(text, mtime=0))
    elif compress == "xz":
        (idx / "Packages.xz").write_bytes(lzma.compress(text))
    else:
        (idx / "Packages").write_bytes(text)
    release = (f"Origin: Debian\nLabel: Debian\nSuite: {suite}\nCodename: {suite}\nDate: {date}\n"
               f"Architectures: {arch}\nComponents: main\n")
    for f in d.glob("*Release"):
        f.unlink()
    if inrelease:
        (d / "InRelease").write_text("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + release +
                                     "-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCgAd\n-----END PGP SIGNATURE-----\n")
    else:
        (d / "Release").write_text(release)


@contextlib.contextmanager
def served(root: Path, faults: dict[str, list[str]] | None = None) -> Iterator[str]:
    """The directory over HTTP on 127.0.0.1 (a thread); yields the base URL. `faults`: for a
    URL path ending so, the next answers, in order: "truncated" (a body cut short of its
    Content-Length), "503", "reset" (the connection closed before any answer), or
    "always-503" (every answer from then on)."""
    handler = functools.partial(_Quiet, directory=str(root), faults=faults if faults is not None else {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: object, faults: dict[str, list[str]], **kw: object) -> None:
        self.faults = faults
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        for suffix, plan in self.faults.items():
            if self.path.endswith(suffix) and plan:
                fault = plan[0] if plan[0].startswith("always") else plan.pop(0)
                return self._fault(fault)
        super().do_GET()

    def _fault(self, fault: str) -> None:
        if fault.endswith("503"):
            self.send_error(503, "Service Unavailable")
        elif fault == "truncated":
            path = Path(self.translate_path(self.path))
            data = path.read_bytes() if path.is_file() else b"x" * 100
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        elif fault == "reset":
            self.close_connection = True  # no status line: the client sees the connection end

    def log_message(self, format: str, *args: object) -> None:
        pass


def build_deb(out: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A real binary package (Architecture: all) built with dpkg-deb: `files` maps absolute
    paths in the package to their text."""
    tree = out / f"{name}_{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: goldenimage tests <tests@example.org>\n"
        f"Section: misc\nPriority: optional\nDescription: {name}, a package the tests publish\n")
    for path, text in files.items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    deb = out / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


def write_repo(root: Path, suite: str, debs: list[Path], *, arch: str = "amd64") -> None:
    """An apt repository apt itself accepts (with `[trusted=yes]`: no signature): the .debs
    under pool/, dists/<suite>/main/binary-<arch>/Packages(.gz) with Filename, Size and
    digests, and a Release listing the indexes' sha256 (what apt-ftparchive writes)."""
    pool = root / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    paras = []
    for deb in debs:
        shutil.copy2(deb, pool / deb.name)
        data = deb.read_bytes()
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout
        paras.append(control.rstrip("\n") + f"\nFilename: pool/{deb.name}\nSize: {len(data)}\n"
                     f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")
    d = root / "dists" / suite
    idx = d / "main" / f"binary-{arch}"
    idx.mkdir(parents=True, exist_ok=True)
    text = "\n".join(paras).encode()
    (idx / "Packages").write_bytes(text)
    (idx / "Packages.gz").write_bytes(gzip.compress(text, mtime=0))
    listed = "".join(f" {hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_size} main/binary-{arch}/{p.name}\n"
                     for p in sorted(idx.iterdir()))
    date = time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())
    (d / "Release").write_text(f"Origin: goldenimage-tests\nLabel: goldenimage-tests\nSuite: {suite}\n"
                               f"Codename: {suite}\nDate: {date}\nArchitectures: {arch}\nComponents: main\n"
                               f"SHA256:\n{listed}")
