"""Compliance audit benchmark: prints one JSON document.

Boots `DISK` once under TCG as the validation does (its own boot loader, cloud-init, through a
throw-away overlay), then runs the real audit (`adapters.lynis.run`: the scanner copied in,
`lynis audit system` on the chosen groups, the report read back) once per group set, each
timed from the copy to the report. Also times the image checks of the same boot
(`tests/image/common` only with `--checks`), so that the audit's share of a validation phase
shows: `share = audit / (ssh + checks + audit)`. Goal (issue 23): <= 0.25.

    python bench/audit.py DISK.qcow2 [--sets ssh,authentication,shells file_permissions] [--checks]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from goldenimage import compliance  # noqa: E402
from goldenimage.adapters import lynis, qemu, testinfra  # noqa: E402
from goldenimage.build import BUILD_USER  # noqa: E402
from goldenimage.progress import Reporter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("disk", type=Path)
    ap.add_argument("--sets", nargs="+", default=[",".join(compliance.DEFAULT_GROUPS), "file_permissions"],
                    help="comma-separated lynis groups, one audit each (file_permissions: ~the fixed cost)")
    ap.add_argument("--checks", action="store_true", help="also time tests/image/common in the same boot")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--memory", type=int, default=1024)
    args = ap.parse_args()
    reporter = Reporter(stream=open(os.devnull, "w"))  # noqa: SIM115
    out: dict[str, object] = {"disk": str(args.disk), "scanner": f"lynis {lynis.version()}",
                              "load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        started = time.monotonic()
        with qemu.boot(args.disk, Path(tmp) / "vm", accelerator="tcg", cpus=args.cpus, memory=args.memory,
                       timeout=900, reporter=reporter, user=BUILD_USER) as vm:
            out["ssh_seconds"] = round(time.monotonic() - started, 1)
            if args.checks:
                t = time.monotonic()
                pub = Path(f"{vm.key}.pub").read_text().strip()
                suite = testinfra.run_suite([ROOT / "tests/image/common"], vm.host, vm.ssh_config,
                                            {"validation_user": BUILD_USER, "validation_pubkey": pub},
                                            Path(tmp) / "checks", reporter, root=ROOT, workers=min(args.cpus, 2))
                out["checks"] = {"seconds": round(time.monotonic() - t, 1), "passed": suite.passed,
                                 "failed": suite.failed}
            audits = []
            for groups in args.sets:
                done = lynis.run(vm.ssh_config, vm.host, groups.split(","))
                audit = compliance.parse_report(done.report)
                slow = re.findall(r"^slow_test\[\]=([A-Z0-9-]+),([0-9.]+)", done.report, re.M)
                audits.append({"groups": groups.split(","), "seconds": done.seconds, "tests": len(audit.executed),
                               "score": audit.score, "warnings": len(audit.warnings),
                               "suggestions": len(audit.suggestions),
                               "slow_tests": {t: round(float(s), 1) for t, s in slow}})
            out["audits"] = audits
    first = audits[0]["seconds"]
    if args.checks:
        phase = float(out["ssh_seconds"]) + out["checks"]["seconds"] + first  # type: ignore[index]
        out["validation_phase_seconds"] = round(phase, 1)
        out["audit_share"] = round(first / phase, 3)
    out["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
