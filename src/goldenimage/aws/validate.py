"""AMI validation: boot the AMI you will run, check it over SSH, always clean up.

`validate_ami` launches one instance of the AMI in a configured subnet with a temporary
key pair and a temporary security group (SSH only from the given CIDRs), waits for it to
run, hands it to a `RemoteCheck` (the image's testinfra suites over SSH in real
use; a fake against moto, which runs no guests), and then removes the instance, the
security group and the key pair -- on success, on failure, and on Ctrl-C/SIGTERM.

Every temporary resource carries the tag `goldenimage:validation=<token>`, the AMI it
validates (`goldenimage:validation-image`) and when the run started (`goldenimage:created`;
a security group has no creation time of its own), so a run that was killed outright
(SIGKILL, power loss) leaves resources `invoke gc` finds, names and removes once they are
old enough (`aws/leftovers.py`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

from ..errors import ConfigError, ValidationFailed
from ..models import CREATED_TAG
from ..progress import Reporter
from .clients import Clients
from .errors import aws_errors, code_means, error_code
from .registry import AwsRegistry

if TYPE_CHECKING:
    from ..settings import ComplianceSpec

VALIDATION_TAG = "goldenimage:validation"
VALIDATION_IMAGE_TAG = "goldenimage:validation-image"


@dataclass(frozen=True)
class RemoteTarget:
    """A running instance to check."""

    instance_id: str
    host: str
    user: str
    key_file: Path
    image_id: str
    port: int = 22


@dataclass
class CheckResult:
    passed: bool
    failures: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class RemoteCheck(Protocol):
    """What validation runs against the booted instance."""

    def __call__(self, target: RemoteTarget, reporter: Reporter) -> CheckResult: ...


def wait_for_ssh(host: str, port: int, timeout: float, poll: float = 2.0) -> None:
    """Wait until `host:port` greets with an SSH banner. An accepted TCP connection alone
    proves nothing: a NAT, proxy or load balancer may accept before (or without) sshd."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                sock.settimeout(max(1.0, min(10.0, deadline - time.monotonic())))
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ValidationFailed(f"no SSH on {host}:{port} within {timeout:.0f}s")
        time.sleep(poll)


class TestinfraCheck:
    """The image's suite directories over SSH with testinfra, as the local validation runs
    them (one pytest run from the project `root`).

    `expect` holds what the image must report (image_name, image_id, fingerprint,
    build_time); the user and public key of this validation boot are added here.
    """

    __test__ = False  # not a pytest class

    def __init__(
        self, suites: Sequence[Path], *, root: Path, expect: dict[str, Any], work: Path,
        boot_timeout: float = 600, note: str | None = None, compliance: ComplianceSpec | None = None,
    ) -> None:
        self.suites = list(suites)
        self.compliance = compliance  # the audit after the checks (adapters.lynis); None: none
        self.root = root
        self.note = note  # said in the output: e.g. the image gets the common checks only
        self.expect = expect
        self.work = work
        self.boot_timeout = boot_timeout

    def __call__(self, target: RemoteTarget, reporter: Reporter) -> CheckResult:
        from ..adapters import imagefacts, testinfra
        from ..adapters.qemu import write_ssh_config
        from ..fsutil import short_tempdir

        if self.note:
            reporter.info(f"    {self.note}")
        reporter.step(f"waiting for SSH on {target.host}:{target.port}")
        wait_for_ssh(target.host, target.port, self.boot_timeout)
        self.work.mkdir(parents=True, exist_ok=True)
        pub = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(target.key_file)], capture_output=True, text=True, check=True
        ).stdout.strip()
        expect = {**self.expect, "validation_user": target.user, "validation_pubkey": pub}
        with short_tempdir("gi-ssh-") as control:
            config = write_ssh_config(
                self.work / "ssh_config", target.port, target.user, target.key_file, control,
                hostname=target.host,
            )
            suite = testinfra.run_suite(self.suites, "target", config, expect, self.work, reporter,
                                        root=self.root)
            # the AMI's SBOM and apt sources, over the same control connection
            installed, sources = imagefacts.read(lambda cmd: _ssh(config, cmd))
            reporter.info(f"    testinfra: {suite.passed} passed, {suite.failed} failed, {suite.errors} errors")
            audit = None
            if self.compliance is not None:
                from ..adapters import lynis

                audit = lynis.audit_image(config, "target", self.compliance, self.work, reporter)
        return CheckResult(passed=suite.ok and (audit is None or audit["ok"]),
                           failures=[*suite.failures, *(audit["failures"] if audit else [])],
                           details={**suite.as_dict(), "junit": str(suite.junit),
                                    **imagefacts.as_manifest(installed, sources),
                                    **({"compliance": audit} if audit else {})})


def _ssh(config: Path, command: str) -> tuple[int, str, str]:
    res = subprocess.run(["ssh", "-F", str(config), "target", command], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    return res.returncode, res.stdout, res.stderr


@contextlib.contextmanager
def _deferred_signals() -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM while cleaning up; re-deliver them afterwards."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Resources:
    """What one validation run created, removed in reverse order."""

    def __init__(self, clients: Clients, token: str, reporter: Reporter) -> None:
        self.clients = clients
        self.token = token
        self.reporter = reporter
        self.instance_id: str | None = None
        self.group_id: str | None = None
        self.key_name: str | None = None
        self.key_dir: tempfile.TemporaryDirectory[str] | None = None
        self.removed: list[str] = []
        self.errors: list[str] = []

    def _try(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
            self.removed.append(what)
        except ClientError as exc:
            if error_code(exc).endswith(".NotFound"):
                self.removed.append(what)
            else:
                self.errors.append(f"{what}: {error_code(exc)}: {exc}")
        except Exception as exc:  # keep removing the rest
            self.errors.append(f"{what}: {exc}")

    def cleanup(self) -> None:
        ec2 = self.clients.ec2
        with _deferred_signals() as held:
            if self.instance_id:
                iid = self.instance_id
                self.reporter.step(f"terminating {iid}")
                self._try(f"instance {iid}", lambda: ec2.terminate_instances(InstanceIds=[iid]))
                self._try(
                    f"wait {iid} terminated",
                    lambda: ec2.get_waiter("instance_terminated").wait(
                        InstanceIds=[iid], WaiterConfig={"Delay": 5, "MaxAttempts": 120}
                    ),
                )
            if self.group_id:
                gid = self.group_id
                self._try(f"security group {gid}", lambda: ec2.delete_security_group(GroupId=gid))
            if self.key_name:
                name = self.key_name
                self._try(f"key pair {name}", lambda: ec2.delete_key_pair(KeyName=name))
            if self.key_dir is not None:
                self.key_dir.cleanup()
        if held:
            os.kill(os.getpid(), held[0])


def validate_ami(
    clients: Clients,
    image_id: str,
    *,
    subnet: str,
    check: RemoteCheck,
    reporter: Reporter | None = None,
    instance_type: str = "t3.micro",
    ssh_user: str = "admin",
    ssh_cidrs: list[str] | None = None,
    registry: AwsRegistry | None = None,
) -> dict[str, Any]:
    """Launch `image_id`, run `check` against it, clean up; ValidationFailed on failures."""
    rep = reporter or Reporter(quiet=True)
    reg = registry or AwsRegistry(clients, env="")
    token = uuid.uuid4().hex[:12]
    res = _Resources(clients, token, rep)
    ec2 = clients.ec2
    result: dict[str, Any] = {"image_id": image_id, "token": token, "subnet": subnet}
    tags = [
        {"Key": VALIDATION_TAG, "Value": token},
        {"Key": VALIDATION_IMAGE_TAG, "Value": image_id},
        {"Key": CREATED_TAG, "Value": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        {"Key": "Name", "Value": f"goldenimage-validate-{token}"},
    ]
    try:
        with aws_errors(clients):
            rec = reg.get(image_id)
            if rec.status == "revoked":
                raise ConfigError(f"image {image_id} is revoked: it is not validated again")
            with rep.phase("launch", f"{image_id} in {subnet}"):
                with code_means("InvalidSubnetID", lambda code: ConfigError(
                        f"field extra.aws.validation.subnet: subnet {subnet} does not exist in {clients.ctx.region}")):
                    sn = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]
                cidrs = ssh_cidrs or [sn["CidrBlock"]]
                res.key_dir = tempfile.TemporaryDirectory(prefix="goldenimage-validate-")
                key = ec2.create_key_pair(
                    KeyName=f"goldenimage-validate-{token}",
                    KeyType="ed25519",
                    TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}],
                )
                res.key_name = key["KeyName"]
                key_file = Path(res.key_dir.name) / "id_ed25519"
                key_file.write_text(key["KeyMaterial"])
                key_file.chmod(0o600)
                res.group_id = ec2.create_security_group(
                    GroupName=f"goldenimage-validate-{token}",
                    Description="goldenimage validation: SSH from the runner only",
                    VpcId=sn["VpcId"],
                    TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
                )["GroupId"]
                ec2.authorize_security_group_ingress(
                    GroupId=res.group_id,
                    IpPermissions=[
                        {
                            "IpProtocol": "tcp",
                            "FromPort": 22,
                            "ToPort": 22,
                            "IpRanges": [{"CidrIp": c} for c in cidrs],
                        }
                    ],
                )
                inst = ec2.run_instances(
                    ImageId=image_id,
                    InstanceType=instance_type,
                    MinCount=1,
                    MaxCount=1,
                    KeyName=res.key_name,
                    SubnetId=subnet,
                    SecurityGroupIds=[res.group_id],
                    InstanceInitiatedShutdownBehavior="terminate",
                    MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                    TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
                )["Instances"][0]
                res.instance_id = inst["InstanceId"]
                result["instance_id"] = res.instance_id
                rep.step(f"waiting for {res.instance_id} to run")
                ec2.get_waiter("instance_running").wait(
                    InstanceIds=[res.instance_id], WaiterConfig={"Delay": 5, "MaxAttempts": 120}
                )
                desc = ec2.describe_instances(InstanceIds=[res.instance_id])
                inst = desc["Reservations"][0]["Instances"][0]
                host = inst.get("PublicIpAddress") or inst.get("PrivateIpAddress")
                if not host:
                    raise ValidationFailed(f"{res.instance_id} has no IP address")
                if inst.get("ImageId") != image_id:
                    raise ValidationFailed(
                        f"{res.instance_id} runs {inst.get('ImageId')}, not {image_id}"
                    )
        target = RemoteTarget(
            instance_id=res.instance_id,
            host=host,
            user=ssh_user,
            key_file=key_file,
            image_id=image_id,
        )
        with rep.phase("check", f"{ssh_user}@{host}"):
            outcome = check(target, rep)
        result.update(passed=outcome.passed, failures=outcome.failures, check=outcome.details)
    finally:
        with rep.phase("cleanup", f"validation {token}"), aws_errors(clients):
            res.cleanup()
        result["cleaned_up"] = res.removed
        if res.errors:
            result["cleanup_errors"] = res.errors
            rep.warn(
                f"validation {token}: could not remove: {'; '.join(res.errors)} "
                f"(find them by tag {VALIDATION_TAG}={token})"
            )
    if not result["passed"]:
        err = ValidationFailed(
            f"image {image_id} failed validation: {len(result['failures'])} "
            f"failure(s): {'; '.join(result['failures'][:3])}",
            result["failures"],
        )
        err.result = result
        raise err
    return result


def leftovers(clients: Clients) -> dict[str, list[str]]:
    """Temporary validation resources still present (a run killed outright leaves them)."""
    ec2 = clients.ec2
    flt = [{"Name": "tag-key", "Values": [VALIDATION_TAG]}]
    with aws_errors(clients):
        instances = [
            i["InstanceId"]
            for page in ec2.get_paginator("describe_instances").paginate(
                Filters=[
                    *flt,
                    {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
                ]
            )
            for r in page["Reservations"]
            for i in r["Instances"]
        ]
        groups = [
            g["GroupId"]
            for page in ec2.get_paginator("describe_security_groups").paginate(Filters=flt)
            for g in page["SecurityGroups"]
        ]
        keys = [k["KeyName"] for k in ec2.describe_key_pairs(Filters=flt)["KeyPairs"]]
    return {"instances": instances, "security_groups": groups, "key_pairs": keys}
