"""`python -m goldenimage.rotation`: rotate or roll back one group against an explicit endpoint.

For scripts and tests that have no environment directory (the invoke tasks use the
environment's settings instead). Same result contract as the tasks: one JSON document with
--json, exit code 0 / 1 / 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..aws.clients import AwsContext, Clients
from ..cli import run
from ..errors import ConfigError
from ..progress import Reporter
from .executor import human_rotate, rollback, rotate
from .policy import load_policies


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m goldenimage.rotation")
    ap.add_argument("action", choices=["rotate", "rollback"])
    ap.add_argument("--group", required=True)
    ap.add_argument("--image-id")
    ap.add_argument("--policy", default="{}", help="the group's policy as JSON")
    ap.add_argument("--strategy", choices=["rolling", "refresh"])
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--endpoint-url")
    ap.add_argument("--max-attempts", type=int, default=5)
    ap.add_argument("--dummy-credentials", action="store_true")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--debug", action="store_true")
    a = ap.parse_args(argv)

    def work(reporter: Reporter) -> dict[str, Any]:
        try:
            raw = json.loads(a.policy)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--policy: invalid JSON: {exc}") from None
        policy = load_policies({"rotation": {"groups": {a.group: raw}}}, "--policy")[a.group]
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        clients = Clients(
            AwsContext(
                region=a.region,
                endpoint_url=a.endpoint_url,
                max_attempts=a.max_attempts,
                credentials=creds if a.dummy_credentials else None,
            )
        )
        if a.action == "rollback":
            return rollback(clients, policy, reporter=reporter, dry_run=a.dry_run)
        return rotate(
            clients,
            policy,
            a.image_id,
            reporter=reporter,
            strategy=a.strategy,
            dry_run=a.dry_run,
            resume=a.resume,
        )

    run(work, json_out=a.json, debug=a.debug, human=human_rotate)


if __name__ == "__main__":
    main()
