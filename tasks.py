"""Invoke tasks: each parses its options, calls the goldenimage library and sets the exit code.

Every task takes --env (default `local`), --json (one JSON document on stdout) and --debug.
Exit codes: 0 done, 1 the operation failed or was rolled back, 2 bad input or configuration.
"""

from invoke import Collection, task

from goldenimage import bake as _bake
from goldenimage import hostsetup
from goldenimage.cli import run

COMMON = {"env": "environment: a directory under inventories/", "json": "print one JSON document",
          "debug": "show tracebacks"}


@task(help={**COMMON, "check": "only check, install nothing"})
def setup(c, env="local", json=False, debug=False, check=False):
    """Install (apt, idempotent) or check what the host needs; print each tool's version."""
    run(lambda r: hostsetup.setup(check, r), json_out=json, debug=debug, human=hostsetup.human)


@task(help={**COMMON, "image": "image to bake (default: the environment's only image, or web)",
            "force": "rebuild even if a validated image has the same fingerprint"})
def bake(c, env="local", image=None, force=False, json=False, debug=False):
    """Fingerprint, then build, validate and register the image unless it is up to date."""
    run(lambda r: _bake.bake(env, image, force, r), json_out=json, debug=debug, human=_bake.human_bake)


@task(help={**COMMON, "image_id": "the image to boot and test again"})
def validate(c, image_id, env="local", json=False, debug=False):
    """Boot a registered image and run the testinfra suite (tests/image) again."""
    run(lambda r: _bake.validate(env, image_id, r), json_out=json, debug=debug, human=_bake.human_validate)


@task(help={**COMMON, "image": "only images of this name"})
def images(c, env="local", image=None, json=False, debug=False):
    """List images: id, name, fingerprint, created, status, channels."""
    run(lambda r: _bake.images(image, r), json_out=json, debug=debug, human=_bake.human_images)


ns = Collection(setup, bake, validate, images)
