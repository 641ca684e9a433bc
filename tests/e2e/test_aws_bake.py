"""The AMI bake for real: Packer's amazon-ebs builder against the sandbox's AWS API.

No AWS account is needed: the sandbox (a moto server on loopback, started here with
`invoke sandbox.up`) answers every EC2 call Packer and the toolkit make, and a local QEMU VM
booted from the base disk stands in for the build instance (the environment's
`extra.aws.build.ssh_host/ssh_port/ssh_private_key_file`: the same knobs a tunnel to a real
instance uses). Packer launches the instance, runs the Ansible provisioner over SSH, stops
it, creates the AMI, encrypts it, copies it to a second region and shares it; then the
toolkit launches the new AMI for validation and tags it. moto boots no guests, so the
validation's remote check is the injected interface (aws/validate.RemoteCheck), except in
the command-line test, which runs the real testinfra check and finds no SSH.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from goldenimage.aws.validate import CheckResult, RemoteTarget, leftovers
from goldenimage.errors import ValidationFailed
from goldenimage.progress import Reporter
from tests.conftest import copy_project, run_invoke, wait_for_output

pytestmark = pytest.mark.slow

REGION, COPY_REGION, SHARED_WITH = "us-east-1", "eu-west-1", "111122223333"
PROBE_PLAYBOOK = """\
- name: "A small image: proves Ansible ran on the build instance through Packer"
  hosts: all
  become: true
  gather_facts: false
  tasks:
    - name: Record the image's fingerprint
      ansible.builtin.copy:
        dest: /etc/goldenimage-probe
        content: "{{ goldenimage_fingerprint }} {{ goldenimage_image_id }}\\n"
        mode: "0644"
"""
SLOW_PLAYBOOK = """\
- name: An image whose build takes long enough to be interrupted
  hosts: all
  gather_facts: false
  tasks:
    - name: Take a while
      ansible.builtin.pause:
        seconds: 300
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, base_image: Path) -> Iterator[dict[str, Any]]:
    """A project with environment `awstest` (target aws), its sandbox, and the stand-in VM."""
    from goldenimage.adapters import qemu

    tmp = tmp_path_factory.mktemp("awsbake")
    project = copy_project(tmp / "project")
    home = tmp / "home"
    recording = tmp / "recording.jsonl"  # every request the sandbox answers (moto's recorder)
    up = run_invoke("sandbox.up", "--json", root=project, home=home, timeout=300, env={
        "MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(recording)})
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    endpoint = state["endpoint"]
    try:
        with qemu.boot(base_image, tmp / "vm", accelerator="tcg", cpus=2, memory=1024, timeout=600,
                       reporter=Reporter(quiet=True), user="admin") as vm:
            subnet = state["seed"]["subnets"][0]
            inv = project / "inventories" / "awstest"
            inv.mkdir()
            (inv / "hosts.yml").write_text("all:\n  children:\n    probe: {}\n")
            (project / "playbooks" / "probe.yml").write_text(PROBE_PLAYBOOK)
            (project / "playbooks" / "slow.yml").write_text(SLOW_PLAYBOOK)
            (inv / "goldenimage.yml").write_text(f"""\
target: aws
region: {REGION}
images:
  probe: {{playbook: playbooks/probe.yml, groups: [probe]}}
  slow: {{playbook: playbooks/slow.yml, groups: [probe]}}
extra:
  aws:
    max_attempts: 2
    build:
      subnet: {subnet}
      instance_type: t3.micro
      ssh_username: admin
      ssh_cidrs: [127.0.0.1/32]
      ssh_host: 127.0.0.1
      ssh_port: {vm.port}
      ssh_private_key_file: {vm.key}
      kms_key_id: alias/goldenimage
      region_kms_key_ids: {{{COPY_REGION}: alias/goldenimage}}
      ami_regions: [{COPY_REGION}]
      ami_users: ['{SHARED_WITH}']
    validation:
      subnet: {subnet}
      boot_timeout: 10
""")
            environ = {
                "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "sandbox",
                "AWS_SECRET_ACCESS_KEY": "sandbox", "GOLDENIMAGE_HOME": str(home),
                "GOLDENIMAGE_ROOT": str(project), "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
            }
            yield {"project": project, "home": home, "endpoint": endpoint, "vm": vm, "environ": environ,
                   "recording": recording}
    finally:
        run_invoke("sandbox.down", root=project, home=home, timeout=120)


@pytest.fixture(autouse=True)
def _toolkit_calls_are_in_the_iam_list() -> Iterator[None]:
    """Least privilege: what the toolkit itself calls during an AMI bake is in iam.ACTIONS."""
    from goldenimage.aws import iam
    from tests.aws_faults import CallRecorder

    with CallRecorder() as recorder:
        yield
    unlisted = sorted({c for c in recorder.calls if c not in iam.ACTIONS})
    assert unlisted == [], f"API calls not in goldenimage/aws/iam.py ACTIONS: {unlisted}"


@pytest.fixture
def aws_env(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for k, v in world["environ"].items():
        monkeypatch.setenv(k, v)
    return world


def ec2(world: dict[str, Any], region: str = REGION) -> Any:
    return boto3.client("ec2", region_name=region, endpoint_url=world["endpoint"],
                        aws_access_key_id="sandbox", aws_secret_access_key="sandbox")


def tags_of(world: dict[str, Any], region: str, ami: str) -> dict[str, str]:
    img = ec2(world, region).describe_images(ImageIds=[ami])["Images"][0]
    return {t["Key"]: t["Value"] for t in img.get("Tags", [])}


def probe_amis(world: dict[str, Any], region: str) -> list[dict[str, Any]]:
    return ec2(world, region).describe_images(
        Owners=["self"], Filters=[{"Name": "tag:goldenimage:name", "Values": ["probe"]}])["Images"]


def assert_nothing_temporary_left(world: dict[str, Any]) -> None:
    """Packer's build instance, key pair and security group, and validation's, are gone."""
    client = ec2(world)
    running = [i["InstanceId"] for r in client.describe_instances(Filters=[
        {"Name": "tag-key", "Values": ["goldenimage:build", "goldenimage:validation"]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ])["Reservations"] for i in r["Instances"]]
    assert running == []
    assert [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("packer")] == []
    groups = [g["GroupName"] for g in client.describe_security_groups()["SecurityGroups"]]
    assert not [g for g in groups if g.startswith(("packer", "goldenimage-validate"))]


class Check:
    """The remote check behind the interface: records what it was given, answers as told."""

    def __init__(self, outcome: str = "pass") -> None:
        self.outcome = outcome
        self.targets: list[RemoteTarget] = []

    def __call__(self, target: RemoteTarget, reporter: Reporter) -> CheckResult:
        self.targets.append(target)
        if self.outcome == "interrupt":
            raise KeyboardInterrupt
        if self.outcome == "fail":
            return CheckResult(passed=False, failures=["test_probe.py::test_probe_file: missing"])
        return CheckResult(passed=True)


def bake(world: dict[str, Any], check: Check, *, force: bool = False) -> dict[str, Any]:
    from goldenimage import bake as bake_pipeline
    from goldenimage.aws.target import AwsTarget
    from goldenimage.settings import load_environment

    env = load_environment("awstest", world["project"])
    return bake_pipeline.run(AwsTarget(env, check=check), "probe", force, Reporter(quiet=True))


def test_amazon_ebs_bake_validates_copies_shares_and_then_is_up_to_date(aws_env: dict[str, Any]) -> None:
    check = Check()
    result = bake(aws_env, check)
    assert result["status"] == "validated" and not result["skipped"]
    amis = result["amis"]
    assert set(amis) == {REGION, COPY_REGION} and result["image_id"] == amis[REGION]
    # Ansible ran on the build instance (the stand-in VM), with the bake's own variables
    probe = aws_env["vm"].ssh("cat /etc/goldenimage-probe").stdout.split()
    assert probe == [result["fingerprint"], result["local_id"]]
    # validation launched the new AMI itself
    assert [t.image_id for t in check.targets] == [amis[REGION]]
    for region, ami in amis.items():
        tags = tags_of(aws_env, region, ami)
        assert tags["goldenimage:status"] == "validated", region
        assert tags["goldenimage:fingerprint"] == result["fingerprint"]
        assert tags["goldenimage:base-ami"] == result["base_ami"] == "ami-0deb12a0d6400c0de"
        perms = ec2(aws_env, region).describe_image_attribute(ImageId=ami, Attribute="launchPermission")
        assert {"UserId": SHARED_WITH} in perms["LaunchPermissions"], region
    # the snapshots carry the image's tags too
    snaps = ec2(aws_env).describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "tag:goldenimage:fingerprint", "Values": [result["fingerprint"]]}])["Snapshots"]
    assert snaps
    # no unencrypted intermediate AMI is left: one AMI per region
    assert [i["ImageId"] for i in probe_amis(aws_env, REGION)] == [amis[REGION]]
    assert_nothing_temporary_left(aws_env)
    # the temporary security group admitted only the runner's address; the log is kept
    log = (Path(result["logs"]) / "build.log").read_text()
    assert f"Authorizing access to port {aws_env['vm'].port} from [127.0.0.1/32] in the temporary" in log
    # the same inputs again: up to date, nothing built
    again = bake(aws_env, Check())
    assert again["skipped"] and again["image_id"] == amis[REGION]


def packer_requests(recording: Path) -> list[dict[str, list[str]]]:
    """The EC2 requests Packer (aws-sdk-go, not boto3) sent the sandbox, as parsed forms."""
    out = []
    for line in recording.read_text().splitlines():
        entry = json.loads(line)
        if "aws-sdk-go" not in entry["headers"].get("User-Agent", "") or not entry.get("body"):
            continue
        body = base64.b64decode(entry["body"]).decode() if entry.get("body_encoded") else entry["body"]
        form = urllib.parse.parse_qs(body)
        if form.get("Action"):
            out.append(form)
    return out


def packer_actions(recording: Path) -> set[str]:
    return {f"ec2:{form['Action'][0]}" for form in packer_requests(recording)}


def test_packer_encrypted_and_admitted_only_the_runner(world: dict[str, Any]) -> None:
    """What Packer asked EC2 for during the bakes above (moto cannot encrypt, so the
    request is the evidence): encrypted copies with the configured KMS key in both
    regions, and SSH ingress from the runner's address only."""
    forms = packer_requests(world["recording"])
    copies = [f for f in forms if f["Action"] == ["CopyImage"]]
    assert copies and all(f["Encrypted"] == ["true"] and f["KmsKeyId"] == ["alias/goldenimage"] for f in copies)
    ingress = [f for f in forms if f["Action"] == ["AuthorizeSecurityGroupIngress"]]
    assert ingress
    for f in ingress:
        cidrs = [v[0] for k, v in f.items() if k.endswith("CidrIp")]
        assert cidrs == ["127.0.0.1/32"], f


def test_packer_calls_only_what_the_iam_policy_grants(world: dict[str, Any]) -> None:
    """Least privilege covers Packer too: its calls during the bakes above are all listed."""
    from goldenimage.aws import iam

    called = packer_actions(world["recording"])
    assert {"ec2:RunInstances", "ec2:CreateImage", "ec2:CopyImage"} <= called
    assert called - set(iam.PACKER_ACTIONS) == set(), sorted(called)
    policy = iam.policy_document()
    granted = {a for st in policy["Statement"] for a in st["Action"]}
    assert called <= granted


def test_failing_validation_quarantines_the_amis(aws_env: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed, match="quarantined") as err:
        bake(aws_env, Check("fail"), force=True)
    amis = err.value.result["amis"]
    for region, ami in amis.items():
        assert tags_of(aws_env, region, ami)["goldenimage:status"] == "quarantined"
    promote = run_invoke("promote", "--env", "awstest", "--image-id", amis[REGION], "--channel", "stable",
                         root=aws_env["project"], env=aws_env["environ"])
    assert promote.returncode == 2 and promote.stderr.startswith("error: ")
    assert_nothing_temporary_left(aws_env)


def test_interrupted_validation_removes_the_new_amis(aws_env: dict[str, Any]) -> None:
    before = {r: {i["ImageId"] for i in probe_amis(aws_env, r)} for r in (REGION, COPY_REGION)}
    with pytest.raises(KeyboardInterrupt):
        bake(aws_env, Check("interrupt"), force=True)
    after = {r: {i["ImageId"] for i in probe_amis(aws_env, r)} for r in (REGION, COPY_REGION)}
    assert after == before  # the interrupted bake's AMIs are deregistered in both regions
    building = [i for r in (REGION, COPY_REGION) for i in probe_amis(aws_env, r)
                if {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("goldenimage:status") == "building"]
    assert building == []
    assert_nothing_temporary_left(aws_env)
    from goldenimage.aws.clients import AwsContext, Clients

    assert leftovers(Clients(AwsContext(region=REGION, endpoint_url=aws_env["endpoint"],
                                        credentials={"aws_access_key_id": "x", "aws_secret_access_key": "x"}))) \
        == {"instances": [], "security_groups": [], "key_pairs": []}


def test_bake_from_the_command_line_runs_the_real_check(world: dict[str, Any]) -> None:
    """`invoke bake --env awstest`: the real testinfra check finds no SSH on moto's instance
    (moto boots nothing), so the AMIs are quarantined: exit 1, one error line, JSON result."""
    res = run_invoke("bake", "--env", "awstest", "--image", "probe", "--force", "--json",
                     root=world["project"], env={**os.environ, **world["environ"]}, timeout=1800)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: image ami-")
    doc = json.loads(res.stdout)
    assert doc["status"] == "quarantined" and any("no SSH" in f for f in doc["failures"])
    assert "TASK [Record the image's fingerprint]" in (Path(doc["logs"]) / "build.log").read_text()
    for region, ami in doc["amis"].items():
        assert tags_of(world, region, ami)["goldenimage:status"] == "quarantined"



@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_amazon_ebs_bake_leaves_nothing(world: dict[str, Any], sig: int) -> None:
    """Ctrl-C (or a kill) while Ansible runs on the build instance: Packer is told to stop
    (SIGINT, or SIGTERM from the kernel when its parent dies) and removes its instance, key
    and group; no AMI exists; the next bake starts clean."""
    log = world["home"] / f"interrupted-{sig}.log"
    env = {**os.environ, **world["environ"]}
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "bake", "--env", "awstest", "--image", "slow"],
                                cwd=world["project"], env=env, stdout=subprocess.DEVNULL, stderr=fh,
                                stdin=subprocess.DEVNULL)
    try:
        wait_for_output(log, proc, "TASK [Take a while]", timeout=600)
        proc.send_signal(sig)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    if sig == signal.SIGINT:
        assert rc == 1 and text.strip().splitlines()[-1].startswith("error: interrupted"), text
    else:
        assert rc == -signal.SIGKILL
    deadline = time.monotonic() + 120  # after a SIGKILL, Packer cleans up on its own
    while True:
        try:
            assert_nothing_temporary_left(world)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    for region in (REGION, COPY_REGION):
        assert [i["ImageId"] for i in ec2(world, region).describe_images(Owners=["self"], Filters=[
            {"Name": "tag:goldenimage:name", "Values": ["slow"]}])["Images"]] == []
    assert "Traceback" not in text
