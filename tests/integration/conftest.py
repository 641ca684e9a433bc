"""Fixtures for tests that talk to an AWS API: ONE moto server per test session.

Public fixtures (the rotator's tests use them too):

- `moto_endpoint`: URL of the session's moto server on 127.0.0.1 (a free port), reset to
  empty before each test (`POST /moto-api/reset`); no built-in AMIs.
- `aws_context` / `aws_clients`: an `AwsContext` / `Clients` bound to it (region
  us-east-1, dummy credentials, `max_attempts=1`: moto answers a missing operation with
  HTTP 500, which must not be retried). Use these for the code under test.
- `retrying_clients`: the same with standard retries (`max_attempts=5`), for fault tests.
- `moto_client(service)`: plain boto3 clients for test set-up and assertions; their calls
  are not recorded, so they do not count against the IAM action list.
- `seeded_fleet`: the sandbox's fleet (VPC, 3 subnets, ALB target group, ASG `web` x6, …)
  seeded into the server; returns the ids (`seed.seed_fleet`).
- `throttle`: a `ThrottleInjector` (30% of requests) active for the test.
- `sandbox_project`: a temporary project root holding inventories/sandbox, with
  GOLDENIMAGE_HOME in a temporary directory (for sandbox.up/down tests).
- `allow_unlisted_calls`: lets a test call actions missing from `aws/iam.py`.

Least privilege: every API call made through `Clients` during a test is recorded; a test
that makes a call whose IAM action is not in `goldenimage.aws.iam.ACTIONS` (or the
sandbox-only seed list) fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config

from goldenimage.aws import iam
from goldenimage.aws.clients import AwsContext, Clients
from goldenimage.sandbox.seed import seed_fleet
from goldenimage.sections import SeedSettings
from tests.aws_faults import CallRecorder, ThrottleInjector

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The session's moto server; prefer `moto_endpoint`, which also resets it."""
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_endpoint(moto_server: str) -> str:
    req = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    return moto_server


@pytest.fixture
def aws_context(moto_endpoint: str) -> AwsContext:
    return AwsContext(
        region=REGION, endpoint_url=moto_endpoint, max_attempts=1, credentials=dict(CREDENTIALS)
    )


@pytest.fixture
def aws_clients(aws_context: AwsContext) -> Clients:
    return Clients(aws_context)


@pytest.fixture
def retrying_clients(moto_endpoint: str) -> Clients:
    return Clients(
        AwsContext(
            region=REGION, endpoint_url=moto_endpoint, max_attempts=5, credentials=dict(CREDENTIALS)
        )
    )


@pytest.fixture
def moto_client(moto_endpoint: str) -> Callable[[str], Any]:
    made: dict[str, Any] = {}

    def make(service: str) -> Any:
        if service not in made:
            made[service] = boto3.session.Session(region_name=REGION, **CREDENTIALS).client(
                service, endpoint_url=moto_endpoint, config=Config(retries={"max_attempts": 1})
            )
        return made[service]

    return make


@pytest.fixture
def seeded_fleet(moto_client: Callable[[str], Any], moto_endpoint: str) -> dict[str, Any]:
    clients = Clients(
        AwsContext(
            region=REGION, endpoint_url=moto_endpoint, max_attempts=1, credentials=dict(CREDENTIALS)
        )
    )
    return seed_fleet(clients, SeedSettings(), env="sandbox")


@pytest.fixture
def throttle(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThrottleInjector]:
    """30% of requests throttled; standard retries' back-off is shortened to keep tests fast
    (the retry decisions and the retry quota are botocore's own)."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.01)
    with ThrottleInjector(rate=0.3, seed=20261126) as inj:
        yield inj


@pytest.fixture
def sandbox_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    (root / "inventories").mkdir(parents=True)
    shutil.copytree(REPO / "inventories" / "sandbox", root / "inventories" / "sandbox")
    (root / "playbooks").mkdir()
    for image in ("base", "web"):  # the sandbox's family: web on base
        (root / "playbooks" / f"{image}.yml").write_text("- hosts: all\n  tasks: []\n")
    (root / "packer").mkdir()
    monkeypatch.setenv("GOLDENIMAGE_ROOT", str(root))
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(tmp_path / "home"))
    return root


def sign_registered(ami: str, env: str = "sandbox") -> str:
    """Sign an AMI a test registered without a bake, as `sandbox.up` signs the AMIs it seeds
    (the environment's key; no inputs or checks recorded), so that promote and rotate take it."""
    from goldenimage.progress import Reporter
    from goldenimage.sandbox.seed import seed_manifest
    from goldenimage.sandbox.target import SandboxTarget
    from goldenimage.settings import load_environment

    target = SandboxTarget(load_environment(env, Path(os.environ["GOLDENIMAGE_ROOT"])))
    reg = target.registry()
    rec = reg.get(ami)
    target.sign_ami(reg, rec.name, rec.id, seed_manifest(rec), None, None, Reporter(quiet=True))
    return ami


@pytest.fixture
def running(sandbox_project: Path) -> Iterator[dict[str, Any]]:
    """The sandbox up (a moto server seeded from the project's inventories/sandbox), and
    down afterwards; yields what `sandbox.up` returned."""
    from goldenimage import sandbox
    from goldenimage.progress import Reporter

    up = sandbox.sandbox_up("sandbox", Reporter(quiet=True))
    try:
        yield up
    finally:
        sandbox.sandbox_down("sandbox", Reporter(quiet=True))


# -- least privilege ----------------------------------------------------------------------
_recorder = CallRecorder()
_all_calls: set[str] = set()


@pytest.fixture(scope="session", autouse=True)
def _record_api_calls() -> Iterator[CallRecorder]:
    with _recorder:
        yield _recorder


@pytest.fixture
def allow_unlisted_calls(request: pytest.FixtureRequest) -> None:
    request.node.goldenimage_allow_unlisted = True


@pytest.fixture(autouse=True)
def _calls_are_in_iam_list(request: pytest.FixtureRequest) -> Iterator[None]:
    mark = _recorder.mark()
    yield
    calls = _recorder.since(mark)
    _all_calls.update(calls)
    if getattr(request.node, "goldenimage_allow_unlisted", False):
        return
    unlisted = sorted({c for c in calls if not iam.allowed(c)})
    if unlisted:
        pytest.fail(
            f"API calls not in goldenimage/aws/iam.py ACTIONS: {', '.join(unlisted)} "
            "(add them with the code that calls them)",
            pytrace=False,
        )


def api_calls_seen() -> set[str]:
    """Every IAM action the suite has called so far (for reports)."""
    return set(_all_calls)


# -- a project whose aws environment talks to the moto server ------------------------------
class MotoAws:
    """A project copy whose `aws` environment (us-east-1) talks to the moto server, and an
    EC2 client to make AMIs there."""

    def __init__(self, root: Path, ec2: Any) -> None:
        self.root = root
        self.ec2 = ec2

    def settings(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Rewrite the aws environment's settings (a parsed YAML document) in place."""
        path = self.root / "inventories" / "aws" / "goldenimage.yml"
        doc = yaml.safe_load(path.read_text())
        change(doc)
        path.write_text(yaml.safe_dump(doc))

    def ami(self, name: str) -> str:
        """A registered AMI (one snapshot) named `name`."""
        ec2 = self.ec2
        snap = ec2.create_snapshot(VolumeId=ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"])
        return str(ec2.register_image(Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64",
                                      BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                            "Ebs": {"SnapshotId": snap["SnapshotId"]}}])["ImageId"])


@pytest.fixture
def moto_aws(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MotoAws:
    from tests.conftest import copy_project

    root = copy_project(tmp_path / "project")
    for k, v in {"GOLDENIMAGE_ROOT": str(root), "GOLDENIMAGE_HOME": str(tmp_path / "home"),
                 "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    world = MotoAws(root, boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_endpoint,
                                       aws_access_key_id="testing", aws_secret_access_key="testing"))
    world.settings(lambda doc: doc.update(region="us-east-1"))
    return world
