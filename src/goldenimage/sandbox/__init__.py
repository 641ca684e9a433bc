"""The sandbox: an AWS API on loopback (a moto server) seeded with a small fleet.

`sandbox_up` starts `goldenimage.sandbox.server` as a detached process on 127.0.0.1,
records it in `data_home()/sandbox/<env>.json` (written atomically), and seeds it from the
environment's `extra.sandbox.seed`. A second `up` finds it running and reports its status.
The record is also left in the sandbox itself (bucket `goldenimage-sandbox`): with a fixed
`extra.sandbox.port`, `up` from another home on this host finds the server there and
attaches to it (its AWS API and the environment's shared state, `state:` without an
endpoint, which `up` makes in the sandbox), as a second machine shares a team's AWS account
and bucket. `sandbox_status` shows it; `sandbox_down` stops it and removes the state (from
an attached home: lets go of it only). Every AWS-side
command of a `target: sandbox` environment reaches it through its target (`sandbox.target`).
The package holds everything of the sandbox target: its server (`server`), the seeded
fleet (`seed`) and the target itself (`target`); nothing else loads moto.

Each command is a library function taking plain arguments and a `Reporter` and returning
a result dict for `cli.run`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import goldenimage

from ..aws.clients import AwsContext, Clients
from ..aws.errors import aws_errors
from ..aws.registry import AwsRegistry
from ..errors import ConfigError, MissingToolError, OperationFailed
from ..fsutil import atomic_write_json, file_lock, pid_alive
from ..models import ImageRecord
from ..paths import data_home
from ..progress import Reporter
from ..settings import SETTINGS_FILE, Environment, environment
from ..targets import require_sandbox
from .seed import Sign, fleet_counts, seed_fleet, seed_manifest, vendor_amis

Result = dict[str, Any]
STATE_VERSION = 1
SANDBOX_CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}
META_BUCKET = "goldenimage-sandbox"  # each environment's sandbox record, for homes that attach


def sandbox_dir() -> Path:
    return data_home() / "sandbox"


def state_path(env_name: str) -> Path:
    return sandbox_dir() / f"{env_name}.json"


def read_state(env_name: str) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(state_path(env_name).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return {"corrupt": True}
    return doc


def _is_our_server(pid: int) -> bool:
    """False when the pid was reused by an unrelated process (where /proc tells us)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"goldenimage.sandbox.server" in cmdline.read_bytes()
    except OSError:
        return pid_alive(pid)


def _answers(endpoint: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def probe(state: dict[str, Any] | None) -> dict[str, bool]:
    if not state or state.get("corrupt"):
        return {"process": False, "answers": False}
    pid = int(state.get("pid", 0))
    process = pid_alive(pid) and _is_our_server(pid)
    return {"process": process, "answers": process and _answers(str(state.get("endpoint", "")))}


def _not_running(env_name: str) -> ConfigError:
    flag = "" if env_name == "sandbox" else f" --env {env_name}"
    return ConfigError(
        f"sandbox for env {env_name!r} is not running: run `invoke sandbox.up{flag}`"
    )


def running_state(env: Environment | str) -> dict[str, Any]:
    """The state of the environment's running, seeded sandbox; ConfigError if there is none."""
    name = env.name if isinstance(env, Environment) else env
    state = read_state(name)
    if not state or not state.get("seeded") or not probe(state)["answers"]:
        raise _not_running(name)
    return state


def sandbox_context(state: dict[str, Any], max_attempts: int = 5) -> AwsContext:
    return AwsContext(
        region=str(state["region"]),
        endpoint_url=str(state["endpoint"]),
        max_attempts=max_attempts,
        credentials=dict(SANDBOX_CREDENTIALS),
    )


def state_bucket(env: Environment, state: dict[str, Any]) -> str | None:
    """Make the bucket of the environment's shared state in its sandbox (`state:` without
    `endpoint_url`: the sandbox's moto server serves it) if it is not there yet; its name,
    or None when the environment keeps its state elsewhere."""
    spec = env.settings.state
    if spec is None or spec.endpoint_url is not None:
        return None
    s3 = _sandbox_s3(state)
    try:
        s3.head_bucket(Bucket=spec.bucket)
    except Exception:  # 404: a sandbox started before the settings named it, or a fresh one
        region = str(state["region"])
        s3.create_bucket(Bucket=spec.bucket, **({} if region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": region}}))
        s3.put_bucket_versioning(Bucket=spec.bucket, VersioningConfiguration={"Status": "Enabled"})
    return spec.bucket


def _sandbox_s3(state: dict[str, Any]) -> Any:
    from ..state.bucket import s3_client

    return s3_client(str(state["region"]), str(state["endpoint"]), credentials=dict(SANDBOX_CREDENTIALS))


def _publish(state: dict[str, Any]) -> None:
    """Leave the sandbox's record in the sandbox itself, so that another home on this host
    (another user, a CI job's own home) can attach to it (`_attach`)."""
    s3 = _sandbox_s3(state)
    with contextlib.suppress(Exception):  # made by an earlier publish of this server
        s3.create_bucket(Bucket=META_BUCKET)
    s3.put_object(Bucket=META_BUCKET, Key=f"{state['env']}.json", Body=json.dumps(state).encode())


def _attach(env: Environment, host: str, port: int) -> dict[str, Any] | None:
    """The record of this environment's sandbox that another home started on `host:port`
    (a fixed `extra.sandbox.port`), or None when what answers there is not one."""
    endpoint = f"http://{host}:{port}"
    if not _answers(endpoint):
        return None
    try:
        got = _sandbox_s3({"region": env.region, "endpoint": endpoint}).get_object(
            Bucket=META_BUCKET, Key=f"{env.name}.json")
        state: dict[str, Any] = json.loads(got["Body"].read())
    except Exception:
        return None
    if state.get("endpoint") != endpoint or not state.get("seeded") or not probe(state)["answers"]:
        return None
    return {**state, "attached": True}


def _port_free(host: str, port: int) -> bool:
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; True when the process is gone."""
    if not pid_alive(pid) or not _is_our_server(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when we are its parent (tests)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return not pid_alive(pid)


def _start_server(
    host: str, port: int, env_name: str, timeout: float
) -> tuple[subprocess.Popen[bytes], dict[str, Any], Path]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise MissingToolError(
            "the sandbox needs moto's server: pip install 'goldenimage[sandbox]'"
        ) from None
    d = sandbox_dir()
    d.mkdir(parents=True, exist_ok=True)
    ready = d / f".{env_name}.ready"
    ready.unlink(missing_ok=True)
    log = d / f"{env_name}.log"
    src = str(Path(goldenimage.__file__).resolve().parent.parent)
    child_env = dict(os.environ)
    child_env["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    amis = d / f"{env_name}.amis.json"
    atomic_write_json(amis, vendor_amis())
    child_env["MOTO_AMIS_PATH"] = str(amis)
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (src, child_env.get("PYTHONPATH")) if p)
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "goldenimage.sandbox.server",
                "--host",
                host,
                "--port",
                str(port),
                "--ready",
                str(ready),
            ],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.is_file():
            info: dict[str, Any] = json.loads(ready.read_text())
            ready.unlink(missing_ok=True)
            return proc, info, log
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise OperationFailed(
                f"the sandbox server exited with status {proc.returncode}: "
                f"{' / '.join(tail)} (log: {log})"
            )
        time.sleep(0.05)
    _stop_pid(proc.pid)
    raise OperationFailed(f"the sandbox server did not start within {timeout:.0f}s (log: {log})")


def _status_result(env: Environment, state: dict[str, Any], *, counts: bool = True) -> Result:
    alive = probe(state)
    result: Result = {
        "env": env.name,
        "running": alive["answers"],
        "alive": alive["process"],
        "pid": state.get("pid"),
        "endpoint": state.get("endpoint"),
        "port": state.get("port"),
        "region": state.get("region"),
        "started": state.get("started"),
        "log": state.get("log"),
        "state_file": str(state_path(env.name)),
        "seeded": bool(state.get("seeded")),
        "seed": state.get("seed", {}),
    }
    if counts and alive["answers"]:
        clients = Clients(sandbox_context(state, env.aws.max_attempts))
        with aws_errors(clients):
            result["groups"] = fleet_counts(clients)
    return result


def _sandbox_env(env: str | Environment, root: Path | None) -> Environment:
    e = environment(env, root)
    require_sandbox(e)
    return e


def sandbox_up(env: str | Environment = "sandbox", reporter: Reporter | None = None, *,
               root: Path | None = None) -> Result:
    """Start and seed the environment's sandbox, or report the one already running."""
    rep = reporter or Reporter(quiet=True)
    e = _sandbox_env(env, root)
    sb, aws = e.sandbox, e.aws
    with file_lock(sandbox_dir() / f"{e.name}.lock"):
        state = read_state(e.name)
        if state is not None:
            alive = probe(state)
            if alive["answers"] and state.get("seeded"):
                rep.info(
                    f"sandbox {e.name!r} already running at {state['endpoint']} "
                    f"(pid {state['pid']})"
                )
                return {**_status_result(e, state), "started_now": False}
            rep.warn(f"sandbox {e.name!r}: found a stale or half-started server; replacing it")
            if alive["process"]:
                _stop_pid(int(state["pid"]))
            state_path(e.name).unlink(missing_ok=True)
        if not _port_free(sb.host, sb.port):  # another home's sandbox of this environment, or not ours
            attached = _attach(e, sb.host, sb.port)
            if attached is None:
                raise ConfigError(
                    f"inventories/{e.name}/{SETTINGS_FILE}: field extra.sandbox.port: "
                    f"port {sb.port} on {sb.host} is in use (use 0 for a free port)"
                )
            atomic_write_json(state_path(e.name), attached)
            rep.info(f"sandbox {e.name!r}: attached to the one another home started at {attached['endpoint']} "
                     f"(pid {attached['pid']}); its AWS API and its shared state are this home's too")
            return {**_status_result(e, attached), "started_now": False, "attached": True}
        with rep.phase("sandbox", f"starting a moto server on {sb.host}"):
            proc, info, log = _start_server(sb.host, sb.port, e.name, sb.start_timeout)
            endpoint = f"http://{sb.host}:{info['port']}"
            state = {
                "version": STATE_VERSION,
                "env": e.name,
                "pid": proc.pid,
                "host": sb.host,
                "port": info["port"],
                "endpoint": endpoint,
                "region": e.region,
                "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "log": str(log),
                "seeded": False,
            }
            atomic_write_json(state_path(e.name), state)  # a crash from here on is recoverable
            rep.info(f"moto server on {endpoint} (pid {proc.pid})")
        try:
            with rep.phase("seed", f"from inventories/{e.name}/{SETTINGS_FILE}"):
                clients = Clients(sandbox_context(state, aws.max_attempts))
                with aws_errors(clients):
                    seeded = seed_fleet(clients, sb.seed, env=e.name, reporter=rep, sign=_seed_signer(e, clients, rep))
                    bucket = state_bucket(e, state)
                if bucket is not None:
                    seeded = {**seeded, "state_bucket": bucket}
                    rep.info(f"shared state in s3://{bucket} (it lives as long as the sandbox)")
                state = {**state, "seeded": True, "seed": seeded}
                _publish(state)
        except BaseException:
            _stop_pid(proc.pid)
            state_path(e.name).unlink(missing_ok=True)
            raise
        atomic_write_json(state_path(e.name), state)
    return {**_status_result(e, state), "started_now": True}


def _seed_signer(env: Environment, clients: Clients, reporter: Reporter) -> Sign:
    """Sign the seeded AMIs with the environment's key, made first if it is not there (a
    local key, or the KMS key of `trust.signing_key` on the sandbox's own KMS), as a bake
    signs what it registers: the seed stands for images this toolkit baked and validated."""
    from .. import trust
    from .target import SandboxTarget

    made = trust.init_keys(env, Reporter(quiet=True), lambda: clients.kms)
    reporter.info(f"    seeded AMIs signed with {made['signing_key']} (key {made['keyid'][:16]}…)")
    target = SandboxTarget(env, clients=clients)

    def sign(reg: AwsRegistry, rec: ImageRecord) -> None:
        target.sign_ami(reg, rec.name, rec.id, seed_manifest(rec), None, None, reporter)

    return sign


def sandbox_status(env: str | Environment = "sandbox", reporter: Reporter | None = None, *,
                   root: Path | None = None) -> Result:
    """The sandbox's pid, endpoint, whether it is alive, and its groups' instance counts."""
    e = _sandbox_env(env, root)
    state = read_state(e.name)
    if state is None:
        return {
            "env": e.name,
            "running": False,
            "alive": False,
            "state_file": str(state_path(e.name)),
            "hint": f"run `invoke sandbox.up{'' if e.name == 'sandbox' else ' --env ' + e.name}`",
        }
    result = _status_result(e, state)
    if not result["running"]:
        result["hint"] = (
            "the recorded server is gone: run `invoke sandbox.down` then `invoke sandbox.up`"
        )
        result["exit_code"] = 1
    return result


def sandbox_down(env: str | Environment = "sandbox", reporter: Reporter | None = None, *,
                 root: Path | None = None) -> Result:
    """Stop the sandbox's server and remove its state (nothing to do when none runs)."""
    rep = reporter or Reporter(quiet=True)
    e = _sandbox_env(env, root)
    with file_lock(sandbox_dir() / f"{e.name}.lock"):
        state = read_state(e.name)
        if state is None:
            return {
                "env": e.name,
                "stopped": False,
                "running": False,
                "note": "no sandbox was running",
            }
        pid = int(state.get("pid", 0) or 0)
        if state.get("attached"):  # another home's server: this home lets go of it, it runs on
            state_path(e.name).unlink(missing_ok=True)
            rep.info(f"sandbox {e.name!r}: detached from {state.get('endpoint')} (pid {pid}, another home's)")
            return {"env": e.name, "stopped": False, "detached": True, "running": False, "pid": pid,
                    "endpoint": state.get("endpoint")}
        gone = _stop_pid(pid) if pid else True
        if not gone:
            raise OperationFailed(
                f"sandbox server pid {pid} did not stop; state kept in {state_path(e.name)}"
            )
        state_path(e.name).unlink(missing_ok=True)
        rep.info(f"sandbox {e.name!r} stopped (pid {pid})")
    return {
        "env": e.name,
        "stopped": True,
        "running": False,
        "pid": pid,
        "endpoint": state.get("endpoint"),
    }


def human_status(result: Result) -> list[str]:
    """Lines for `sandbox.up` and `sandbox.status`."""
    if not result.get("running"):
        lines = [f"sandbox {result.get('env')!r}: not running"]
        if result.get("pid"):
            lines.append(
                f"  recorded pid {result['pid']} at {result.get('endpoint')} "
                f"(alive: {result.get('alive')})"
            )
        if result.get("hint"):
            lines.append(f"  {result['hint']}")
        return lines
    verb = "started" if result.get("started_now") else "attached" if result.get("attached") else "running"
    lines = [
        f"sandbox {result['env']!r} {verb}: {result['endpoint']} "
        f"(pid {result['pid']}, region {result['region']})",
        f"  use it: AWS_ENDPOINT_URL={result['endpoint']} AWS_ACCESS_KEY_ID=sandbox "
        f"AWS_SECRET_ACCESS_KEY=sandbox AWS_DEFAULT_REGION={result['region']}",
    ]
    for name, g in sorted(result.get("groups", {}).items()):
        amis = ", ".join(f"{a} x{n}" for a, n in sorted(g["amis"].items()))
        lines.append(
            f"  group {name}: {g['in_service']}/{g['desired']} in service, "
            f"{g['healthy']} healthy ({amis})"
        )
    return lines


def human_down(result: Result) -> list[str]:
    if result.get("detached"):
        return [f"sandbox {result['env']!r}: detached (pid {result['pid']} runs on for the home that started it)"]
    if result.get("stopped"):
        return [f"sandbox {result['env']!r} stopped (pid {result['pid']})"]
    return [f"sandbox {result['env']!r}: {result.get('note', 'not running')}"]
