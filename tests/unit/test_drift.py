"""drift.py: Release files, Packages indexes and the drift decision (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goldenimage import drift
from goldenimage.drift import Installed, ReleaseState
from tests.debarchive import BASE_PACKAGES, packages_text

INRELEASE = b"""-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Origin: Debian
Suite: stable-security
Codename: bookworm-security
Date: Sat, 28 Nov 2026 10:00:00 UTC
- -dashed: escaped
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCgAd
-----END PGP SIGNATURE-----
"""

INSTALLED = [Installed(n, v, a, s) for n, v, a, s in BASE_PACKAGES]


def test_release_state_reads_the_date_inside_a_signed_inrelease() -> None:
    r = drift.release_state("bookworm-security", INRELEASE)
    assert r.date == "Sat, 28 Nov 2026 10:00:00 UTC"
    assert r.sha256 == __import__("hashlib").sha256(INRELEASE).hexdigest()
    with pytest.raises(ValueError, match="no Date"):
        drift.release_state("x", b"Origin: Debian\n")


def test_changed_releases() -> None:
    a = ReleaseState("bookworm", "d1", "h1")
    assert drift.changed_releases([a], [a]) == []
    assert drift.changed_releases([a], [ReleaseState("bookworm", "d1", "h2")]) == ["bookworm"]
    assert drift.changed_releases([a], [ReleaseState("bookworm", "d2", "h1")]) == ["bookworm"]
    # a suite never recorded (built offline) or no longer fetched counts as changed
    assert drift.changed_releases([], [a]) == ["bookworm"]
    assert drift.changed_releases([a, ReleaseState("b-updates", "d", "h")], [a]) == ["b-updates"]


def test_parse_packages_keeps_only_wanted_and_reads_the_source_name() -> None:
    text = packages_text([("libssl3", "3.0.15-1~deb12u1", "amd64", "openssl"), ("nginx", "1.22", "amd64", "nginx")])
    text = text.replace("Source: openssl", "Source: openssl (3.0.15-1~deb12u1)")
    assert drift.parse_packages(text, {"libssl3"}) == {"libssl3": [("3.0.15-1~deb12u1", "amd64", "openssl")]}
    assert set(drift.parse_packages(text)) == {"libssl3", "nginx"}


def test_newer_packages_by_debian_version_rules() -> None:
    index = {
        "openssl": [("3.0.15-1~deb12u1", "amd64", "openssl")],
        "libssl3": [("3.0.14-1~deb12u2", "amd64", "openssl")],     # the same: not newer
        "libc6": [("2.36-9+deb12u7~bpo1", "amd64", "glibc")],      # ~ sorts before: older
        "tzdata": [("2024b-0+deb12u1", "all", "tzdata")],
        "sudo": [("1.9.13p3-1+deb12u1", "arm64", "sudo"), ("1.9.14", "arm64", "sudo")],  # another arch
    }
    newer = drift.newer_packages(INSTALLED, [("bookworm", {"tzdata": index["tzdata"]}),
                                             ("bookworm-security", {k: v for k, v in index.items() if k != "tzdata"})])
    assert [(n.name, n.available, n.suite) for n in newer] == [
        ("openssl", "3.0.15-1~deb12u1", "bookworm-security"), ("tzdata", "2024b-0+deb12u1", "bookworm")]
    assert newer[0].security and not newer[1].security
    assert drift.describe(newer) == ("archive bookworm-security has newer openssl 3.0.15-1~deb12u1 > "
                                     "3.0.14-1~deb12u2, +1 more")


def test_an_epoch_wins_over_a_bigger_number() -> None:
    newer = drift.newer_packages([Installed("x", "2.0", "amd64")], [("s", {"x": [("1:1.0", "amd64", "x")]})])
    assert [n.available for n in newer] == ["1:1.0"]
    assert drift.newer_packages([Installed("x", "1:1.0", "amd64")], [("s", {"x": [("2.0", "amd64", "x")]})]) == []


def test_the_newest_offer_across_suites_is_named() -> None:
    newer = drift.newer_packages([Installed("x", "1.0", "amd64")], [
        ("b-updates", {"x": [("1.2", "amd64", "x")]}), ("b-security", {"x": [("1.1", "amd64", "x")]})])
    assert [(n.available, n.suite) for n in newer] == [("1.2", "b-updates")]


def test_verdict() -> None:
    assert not drift.verdict([], None).drift
    v = drift.verdict(["bookworm"], [])
    assert not v.drift and "no installed package has a newer version" in v.reason
    n = drift.Newer("openssl", "1", "2", "bookworm-security", "openssl")
    v = drift.verdict(["bookworm-security"], [n])
    assert v.drift and v.reason == "archive bookworm-security has newer openssl 2 > 1"
    assert v.as_dict()["newer"][0]["security"] is True


def test_parse_installed() -> None:
    got = drift.parse_installed("libssl3\t3.0.14\tamd64\topenssl\nbash\t5.2\tamd64\n\n")
    assert got == [Installed("libssl3", "3.0.14", "amd64", "openssl"), Installed("bash", "5.2", "amd64", "")]
    assert got[1].as_dict()["source"] == "bash"
    with pytest.raises(ValueError, match="line 1"):
        drift.parse_installed("only-a-name\n")


versions = st.from_regex(r"([1-9]:)?[0-9]{1,3}(\.[0-9]{1,3}){0,2}(~[a-z0-9]{1,3})?(-[0-9]{1,2}(\+deb12u[0-9])?)?",
                         fullmatch=True)


@given(versions, versions, versions)
def test_version_order_is_a_total_order(a: str, b: str, c: str) -> None:
    assert drift.compare_versions(a, b) == -drift.compare_versions(b, a)
    assert drift.compare_versions(a, a) == 0
    if drift.compare_versions(a, b) <= 0 and drift.compare_versions(b, c) <= 0:
        assert drift.compare_versions(a, c) <= 0


@given(versions, versions)
def test_drift_exactly_when_the_archive_is_newer(have: str, offered: str) -> None:
    newer = drift.newer_packages([Installed("p", have, "amd64")], [("s", {"p": [(offered, "amd64", "p")]})])
    assert bool(newer) == (drift.compare_versions(offered, have) > 0)


# -- per image ---------------------------------------------------------------------------------

SOURCES_DUMP = f"""{drift.APT_SOURCES_MARK}/etc/apt/sources.list
# the base's suites
deb http://deb.debian.org/debian bookworm main contrib
deb-src http://deb.debian.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian bookworm main
deb http://example.org/flat ./
{drift.APT_SOURCES_MARK}/etc/apt/sources.list.d/nginx.sources
Types: deb deb-src
URIs: http://nginx.org/packages/debian
Suites: bookworm
Components: nginx

Types: deb
URIs: http://off.example.org/debian
Suites: bookworm
Enabled: no
"""


def test_apt_sources_of_an_image_one_line_and_deb822() -> None:
    assert [(s.uri, s.suite, s.component) for s in drift.parse_apt_sources(SOURCES_DUMP)] == [
        ("http://deb.debian.org/debian", "bookworm", "main"),
        ("http://deb.debian.org/debian", "bookworm", "contrib"),
        ("http://deb.debian.org/debian-security", "bookworm-security", "main"),
        ("http://nginx.org/packages/debian", "bookworm", "nginx")]
    assert drift.parse_apt_sources("") == []


def test_check_image_names_the_image_the_package_both_versions_and_the_security_suite() -> None:
    main, sec, extra = (drift.Source("http://a", "bookworm"), drift.Source("http://a", "bookworm-security"),
                        drift.Source("http://nginx", "bookworm", "nginx"))
    installed = [*INSTALLED, Installed("nginx", "1.22.1-9", "amd64", "nginx")]
    idx = {main: drift.parse_packages(packages_text(BASE_PACKAGES)),
           sec: drift.parse_packages(packages_text([("openssl", "3.0.15-1~deb12u1", "amd64", "openssl")])),
           extra: drift.parse_packages(packages_text([("nginx", "1.22.1-9+deb12u2", "amd64", "nginx"),
                                                      ("nginx", "1.22.1-10", "arm64", "nginx")]))}
    got = drift.check_image("web", installed, [main, sec, extra], idx)
    assert got.state == drift.DRIFTED and got.packages_checked == len(installed)
    assert got.indexes == ["http://a bookworm/main", "http://a bookworm-security/main", "http://nginx bookworm/nginx"]
    assert got.reasons() == [
        "web: openssl 3.0.14-1~deb12u2 installed, 3.0.15-1~deb12u1 in bookworm-security (security fix)",
        "web: nginx 1.22.1-9 installed, 1.22.1-9+deb12u2 in bookworm (update)"]  # not the arm64 one
    # an image that does not install from the nginx repository does not see it
    assert drift.check_image("base", INSTALLED, [main], idx).state == drift.CURRENT


def test_an_unreadable_index_is_unknown_unless_another_shows_drift() -> None:
    main, sec = drift.Source("http://a", "bookworm"), drift.Source("http://a", "bookworm-security")
    same = drift.parse_packages(packages_text(BASE_PACKAGES))
    newer = drift.parse_packages(packages_text([("sudo", "1.9.13p3-1+deb12u2", "amd64", "sudo")]))
    unknown = drift.check_image("base", INSTALLED, [main, sec], {main: same, sec: None})
    assert unknown.state == drift.UNKNOWN and unknown.unreadable == ["http://a bookworm-security/main"]
    assert drift.check_image("base", INSTALLED, [main, sec], {main: newer, sec: None}).state == drift.DRIFTED
    assert drift.check_image("base", None, [main], {}).state == drift.UNKNOWN
    assert drift.check_image("base", INSTALLED, [], {}).note == "it records no apt sources"


def test_the_sbom_and_sources_from_a_manifest() -> None:
    m = {"packages": [{"name": "nginx", "version": "1.22.1-9", "arch": "amd64", "source": "nginx"},
                      {"name": "tzdata", "version": "2024a-0+deb12u1"}],
         "apt_sources": [{"uri": "http://a", "suite": "bookworm"}, {"suite": "no-uri"}]}
    assert drift.installed_from_manifest(m) == [Installed("nginx", "1.22.1-9", "amd64", "nginx"),
                                                Installed("tzdata", "2024a-0+deb12u1", "all", "")]
    assert drift.sources_from_manifest(m) == [drift.Source("http://a", "bookworm")]
    assert drift.installed_from_manifest({}) is None and drift.sources_from_manifest({}) is None
    assert drift.image_arch(drift.installed_from_manifest(m) or []) == "amd64"
    assert drift.image_arch([]) == "amd64"


_VERSIONS = st.sampled_from(["1.0", "1.0-1", "1.0-1+deb12u1", "1.0-2", "1:0.9", "1.0~rc1", "2.0", "1.10"])
_ARCHES = st.sampled_from(["amd64", "arm64", "all"])


@settings(max_examples=200, deadline=None)
@given(installed=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.tuples(_VERSIONS, _ARCHES), max_size=4),
       offers=st.lists(st.tuples(st.sampled_from([0, 1]), st.sampled_from(["a", "b", "c", "e"]), _VERSIONS, _ARCHES),
                       max_size=8),
       readable=st.tuples(st.booleans(), st.booleans()))
def test_an_image_drifts_exactly_when_a_readable_index_offers_a_newer_version_for_its_arch(
    installed: dict[str, tuple[str, str]], offers: list[tuple[int, str, str, str]], readable: tuple[bool, bool]
) -> None:
    srcs = [drift.Source("http://a", "bookworm"), drift.Source("http://a", "bookworm-security")]
    pkgs = [Installed(n, v, a, n) for n, (v, a) in sorted(installed.items())]
    texts = [[(n, v, a, n) for i, n, v, a in offers if i == k] for k in (0, 1)]
    idx = {s: (drift.parse_packages(packages_text(texts[k])) if readable[k] else None) for k, s in enumerate(srcs)}
    got = drift.check_image("web", pkgs, srcs, idx)
    newer = {p.name for p in pkgs for k in (0, 1) if readable[k] for n, v, a, _ in texts[k]
             if n == p.name and (a in (p.arch, "all") or p.arch == "all") and drift.compare_versions(v, p.version) > 0}
    assert {n.name for n in got.newer} == newer
    assert got.state == (drift.DRIFTED if newer else drift.CURRENT if all(readable) else drift.UNKNOWN)
    for n in got.newer:  # the newest offer, named with both versions and whether it is a security fix
        assert drift.compare_versions(n.available, n.installed) > 0
        assert n.security == (n.suite == "bookworm-security")
        assert f"web: {n.name} {n.installed} installed, {n.available} in {n.suite}" in drift.package_reason("web", n)
