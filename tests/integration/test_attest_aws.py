"""Signed provenance on the sandbox, for real: a KMS ECC_NIST_P256 key on the moto server
(`keys.init` makes it), local images signed with it, their AMIs registered in the sandbox
only once the local attestation verifies, the AMI's attestation kept in SSM parts beside
its manifest, and promote, verify and rotate refusing what does not verify (exit 1)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from goldenimage import commands
from goldenimage.aws.context import registry_for
from goldenimage.cli import run
from goldenimage.models import ImageRecord
from goldenimage.progress import Reporter
from goldenimage.rotation.commands import rotate_command
from goldenimage.sandbox.target import SandboxTarget
from goldenimage.settings import load_environment
from tests.integration.conftest import MotoAws

from .test_attest_local import REPORT, _audit, make_image

pytestmark = pytest.mark.integration

ALIAS = "alias/goldenimage-sandbox"


def cli(capsys: pytest.CaptureFixture[str], work: Callable[[Reporter], dict[str, Any]]) -> tuple[int, Any, str]:
    with pytest.raises(SystemExit) as exit_:
        run(work, json_out=True)
    out = capsys.readouterr()
    return int(exit_.value.code or 0), json.loads(out.out), out.err


def trust(project: Path, text: str) -> None:
    path = project / "inventories" / "sandbox" / "goldenimage.yml"
    path.write_text(path.read_text() + "\ntrust:\n" + text)


def refused(capsys: pytest.CaptureFixture[str], work: Callable[[Reporter], dict[str, Any]]) -> str:
    code, _, err = cli(capsys, work)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1, err
    return lines[0]


@pytest.fixture
def kms_env(sandbox_project: Path, running: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> Path:
    trust(sandbox_project, f"  signing_key: kms:{ALIAS}\n  trusted_keys: [kms:{ALIAS}]\n  unsigned: deny\n")
    code, doc, err = cli(capsys, lambda r: commands.keys_init("sandbox", r))
    assert code == 0 and doc["created"] is True and "BEGIN PUBLIC KEY" in doc["public_key"], err
    code, again, _ = cli(capsys, lambda r: commands.keys_init("sandbox", r))
    assert again["created"] is False and again["keyid"] == doc["keyid"]
    return sandbox_project


def registered(project: Path, local_id: str) -> tuple[SandboxTarget, str]:
    """A local image signed with the KMS key, registered in the sandbox as a bake does."""
    rec = make_image(project, local_id, "web", env_name="sandbox", target_cls=SandboxTarget)
    target = SandboxTarget(load_environment("sandbox", project))
    ami = target._register_remote(rec, Reporter(quiet=True))["image_id"]
    return target, ami


def test_a_kms_signed_ami_verifies_is_promoted_and_rotated(kms_env: Path, running: dict[str, Any],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, ami = registered(kms_env, "web-local-1")
    code, doc, err = cli(capsys, lambda r: commands.verify("sandbox", ami, r))
    assert code == 0 and doc["verified"] is True, err
    assert {c["what"] for c in doc["checks"]} >= {"signature", "subject AMI", "image id", "validation"}
    code, doc, err = cli(capsys, lambda r: commands.verify("sandbox", "web-local-1", r))  # the local image too
    assert code == 0 and doc["verified"] is True, err
    code, doc, err = cli(capsys, lambda r: commands.promote("sandbox", ami, "stable", r))
    assert code == 0 and doc["attestation"]["verified"] is True, err
    code, doc, err = cli(capsys, lambda r: rotate_command(r, env="sandbox", group="web", image_id=ami, dry_run=True))
    assert code == 0, err
    # gc's forget deletes the attestation's parameters with the manifest's
    reg = registry_for("sandbox")
    names = reg.image_parameters("web", ami)
    assert any("/_attestation/web/" in n for n in names)
    reg.forget("web", ami)
    assert reg.attestation("web", ami) is None


def test_an_amis_compliance_report_is_kept_in_ssm_and_checked(kms_env: Path, running: dict[str, Any],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Registration keeps the local image's audit report with the AMI (SSM parts, as the
    attestation's); verification compares it with the attested digest; gc's forget deletes it."""
    rec = make_image(kms_env, "web-local-3", "web", env_name="sandbox", target_cls=SandboxTarget,
                     audit=_audit(True), report=REPORT)
    ami = SandboxTarget(load_environment("sandbox", kms_env))._register_remote(rec, Reporter(quiet=True))["image_id"]
    reg = registry_for("sandbox")
    assert reg.compliance_report("web", ami) == REPORT
    code, doc, err = cli(capsys, lambda r: commands.verify("sandbox", ami, r))
    assert code == 0 and {"what": "compliance report", "ok": True,
                          "detail": f"sha256 {hashlib.sha256(REPORT).hexdigest()}"} in doc["checks"], err
    reg.put_compliance_report("web", ami, REPORT + b"warning[]=AUTH-9262|edited|-|-|\n")
    line = refused(capsys, lambda r: commands.promote("sandbox", ami, "stable", r))
    assert line.startswith(f"error: image {ami} (web): attestation compliance report does not match"), line
    assert any("/_compliance/web/" in n for n in reg.image_parameters("web", ami))
    reg.forget("web", ami)
    assert reg.compliance_report("web", ami) is None


def test_the_seeded_amis_are_signed_and_verify(running: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """`sandbox.up` signs the AMIs it seeds with the environment's key (made then): the shipped
    sandbox is strict and its own fleet's images verify, saying they record no checks."""
    base = running["seed"]["images"]["web"]
    code, doc, err = cli(capsys, lambda r: commands.verify("sandbox", base, r))
    assert code == 0 and doc["verified"] is True, err
    assert {"what": "validation", "ok": True, "detail": "0 passed, 0 failed, 0 errors (validated)"} in doc["checks"]
    code, doc, err = cli(capsys, lambda r: commands.promote("sandbox", base, "canary", r))
    assert code == 0 and doc["attestation"]["verified"] is True, err


def test_an_unsigned_ami_is_refused_by_promote_and_rotate(kms_env: Path, running: dict[str, Any],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = registry_for("sandbox").put(ImageRecord(  # registered without a bake: no attestation
        id="web-unsigned", name="web", env="sandbox", fingerprint="sha256:" + "9" * 64,
        created="2026-12-01T00:00:00Z", status="validated", artifact=""), {}).id
    line = refused(capsys, lambda r: commands.promote("sandbox", base, "stable", r))
    assert line.startswith(f"error: image {base} (web): no attestation in SSM "), line
    line = refused(capsys, lambda r: rotate_command(r, env="sandbox", group="web", image_id=base, dry_run=True))
    assert line.startswith(f"error: image {base} (web): no attestation"), line


def test_a_tampered_ami_attestation_and_another_amis_are_refused(kms_env: Path, running: dict[str, Any],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _, ami1 = registered(kms_env, "web-local-1")
    _, ami2 = registered(kms_env, "web-local-2")
    assert ami1 != ami2
    reg = registry_for("sandbox")
    ssm = reg.clients.ssm
    # another AMI's (valid) attestation copied over this one's
    envelope = reg.attestation("web", ami1)
    assert envelope is not None
    for n in reg.image_parameters("web", ami2):
        if "/_attestation/" in n:
            ssm.delete_parameter(Name=n)
    reg.put_attestation("web", ami2, envelope)
    line = refused(capsys, lambda r: commands.verify("sandbox", ami2, r))
    assert line.startswith(f"error: image {ami2} (web): attestation subject AMI does not match"), line
    # a changed statement under the old signature
    doc = json.loads(envelope)
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["subject"][0]["name"] = ami2
    doc["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    reg.put_attestation("web", ami1, json.dumps(doc).encode())
    line = refused(capsys, lambda r: commands.promote("sandbox", ami1, "stable", r))
    assert "attestation signature does not verify" in line and ami1 in line, line


def test_a_local_image_signed_by_a_key_not_trusted_is_not_registered(
        sandbox_project: Path, running: dict[str, Any], tmp_path: Path) -> None:
    from goldenimage.adapters import signing
    from goldenimage.trust import UntrustedImage

    rec = make_image(sandbox_project, "web-local-1", "web", env_name="sandbox", target_cls=SandboxTarget)
    other = signing.create_key(tmp_path / "other.ed25519")
    trust(sandbox_project, f"  trusted_keys: [{other}]\n")
    target = SandboxTarget(load_environment("sandbox", sandbox_project))
    with pytest.raises(UntrustedImage, match=r"^image web-local-1 \(web\): .*signed by a key not trusted"):
        target._register_remote(rec, Reporter(quiet=True))
    assert [r.id for r in registry_for("sandbox").list("web") if r.extra.get("local_id") == rec.id] == []


def test_an_aws_child_is_built_only_on_a_parent_ami_whose_attestation_verifies(moto_aws: MotoAws) -> None:
    from goldenimage.aws.target import AwsTarget
    from goldenimage.models import ImageRecord
    from goldenimage.trust import UntrustedImage

    moto_aws.settings(lambda doc: doc.update(trust={"signing_key": f"kms:{ALIAS}", "unsigned": "deny"}))
    assert commands.keys_init("aws", Reporter(quiet=True), root=moto_aws.root)["created"] is True
    reg = registry_for("aws")
    target = AwsTarget(load_environment("aws", moto_aws.root))
    parents = []
    for n in (1, 2):
        manifest = {"ami_id": moto_aws.ami(f"goldenimage-base-{n}"), "id": f"base-{n}", "name": "base", "env": "aws",
                    "status": "validated", "validation": {"status": "validated", "failures": []}}
        parents.append(reg.put(ImageRecord(id=f"base-{n}", name="base", env="aws", fingerprint=f"{n}" * 64,
                                           created="2026-11-30T01:00:00Z", status="validated", artifact=""), manifest))
    target.sign_ami(reg, "base", parents[0].id, reg.manifest(parents[0].id), None, None, Reporter(quiet=True))
    assert target.resolve_base(Reporter(quiet=True), parents[0]).details["id"] == parents[0].id
    with pytest.raises(UntrustedImage, match=rf"^image {parents[1].id} \(base\): no attestation in SSM"):
        target.resolve_base(Reporter(quiet=True), parents[1])


def test_a_bake_that_did_not_finish_leaves_no_report_or_attestation(moto_aws: MotoAws) -> None:
    """The report and the attestation of an AMI go into SSM before its manifest: a bake
    stopped after them (`discard`) removes them with the AMI."""
    from types import SimpleNamespace

    from goldenimage.aws.target import AwsTarget

    target = AwsTarget(load_environment("aws", moto_aws.root))
    ami = moto_aws.ami("goldenimage-web-9")
    reg = target.registry()
    reg.put_compliance_report("web", ami, REPORT)
    reg.put_attestation("web", ami, b"{}")
    assert len(reg.image_parameters("web", ami)) == 2
    job = SimpleNamespace(image=SimpleNamespace(name="web"), artifacts={"amis": {"us-east-1": ami}})
    target.discard(job, Reporter(quiet=True))  # type: ignore[arg-type]
    assert reg.image_parameters("web", ami) == [] and reg.compliance_report("web", ami) is None
    assert moto_aws.ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": [ami]}])["Images"] == []
