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
def validate(c, image_id=None, env="local", json=False, debug=False):
    """Boot a registered image and run the testinfra suite (tests/image) again."""
    from goldenimage import commands

    run(lambda r: commands.validate(env, image_id, r), json_out=json, debug=debug, human=commands.human_validate)


@task(help={**COMMON, "image": "only images of this name",
            "image_id": "one image's provenance: manifest, fingerprint inputs, SBOM, validation"})
def images(c, env="local", image=None, image_id=None, json=False, debug=False):
    """List images: id, name, fingerprint, created, status, channels."""
    from goldenimage import commands

    run(lambda r: commands.images(env, image, image_id, r), json_out=json, debug=debug, human=commands.human_images)


@task(help={**COMMON, "image": "image name (default: every image of the environment)",
            "explain": "list every input with its digest",
            "against": "an image id: which inputs differ from those it was built from"})
def fingerprint(c, env="local", image=None, explain=False, against=None, json=False, debug=False):
    """Print an image's fingerprint: the hash of every input that shapes it."""
    from goldenimage import commands

    run(lambda r: commands.fingerprint_cmd(env, image, explain, against, r), json_out=json, debug=debug,
        human=commands.human_fingerprint)


@task(help={**COMMON, "image_id": "a validated, non-revoked image", "channel": "channel name, e.g. stable"})
def promote(c, image_id=None, channel=None, env="local", json=False, debug=False):
    """Point a channel at a validated image; every move is kept in the channel's history."""
    from goldenimage import commands

    run(lambda r: commands.promote(env, image_id, channel, r), json_out=json, debug=debug,
        human=commands.human_promote)


@task(help={**COMMON, "image_id": "the image to revoke", "reason": "why (recorded with the image)"})
def revoke(c, image_id=None, reason=None, env="local", json=False, debug=False):
    """Revoke an image for good; channels on it fall back to their newest earlier valid image."""
    from goldenimage import commands

    run(lambda r: commands.revoke(env, image_id, reason, r), json_out=json, debug=debug,
        human=commands.human_revoke)


@task(help={**COMMON, "image": "image name, e.g. web", "channel": "channel name, e.g. stable"})
def history(c, image=None, channel=None, env="local", json=False, debug=False):
    """A channel's moves (time, user, from, to) and its rollback target."""
    from goldenimage import commands

    run(lambda r: commands.history(env, image, channel, r), json_out=json, debug=debug,
        human=commands.human_history)


@task(help={**COMMON, "group": "group under extra.rotation.groups in the environment's settings",
            "image_id": "AMI to rotate in (default: the group's channel)",
            "channel": "take the image from this channel",
            "strategy": "rolling or refresh (default: the group's policy)",
            "dry_run": "print the plan; change nothing",
            "resume": "continue an unfinished rotation whose owner is gone"})
def rotate(c, group=None, env="local", image_id=None, channel=None, strategy=None, dry_run=False, resume=False,
           json=False, debug=False):
    """Replace a group's instances with a new image; roll back when health says no."""
    from goldenimage.commands import required
    from goldenimage.rotation.commands import rotate_command
    from goldenimage.rotation.executor import human_rotate

    def work(r):
        required(group=group)
        return rotate_command(r, env=env, group=group, image_id=image_id, channel=channel, strategy=strategy,
                              dry_run=dry_run, resume=resume)

    run(work, json_out=json, debug=debug, human=human_rotate)


@task(help={**COMMON, "group": "group under extra.rotation.groups", "dry_run": "say what would happen; change nothing"})
def rollback(c, group=None, env="local", dry_run=False, json=False, debug=False):
    """Return a group to the exact image and launch-template version it ran before the last rotation."""
    from goldenimage.commands import required
    from goldenimage.rotation.commands import rollback_command
    from goldenimage.rotation.executor import human_rotate

    def work(r):
        required(group=group)
        return rollback_command(r, env=env, group=group, dry_run=dry_run)

    run(work, json_out=json, debug=debug, human=human_rotate)


@task(name="iam-policy", help=COMMON)
def iam_policy(c, env="local", json=False, debug=False):
    """Print the IAM policy granting exactly the AWS actions the toolkit calls."""
    from goldenimage.aws import iam

    run(lambda r: iam.iam_policy(env, r), json_out=json, debug=debug, human=iam.human_policy)


@task(help=COMMON)
def sandbox_up(c, env="sandbox", json=False, debug=False):
    """Start the loopback AWS API (a moto server) and seed it from inventories/<env>."""
    from goldenimage.aws import sandbox

    run(lambda r: sandbox.sandbox_up(env, r), json_out=json, debug=debug, human=sandbox.human_status)


@task(help=COMMON)
def sandbox_down(c, env="sandbox", json=False, debug=False):
    """Stop the sandbox and forget its state."""
    from goldenimage.aws import sandbox

    run(lambda r: sandbox.sandbox_down(env, r), json_out=json, debug=debug, human=sandbox.human_down)


@task(help=COMMON)
def sandbox_status(c, env="sandbox", json=False, debug=False):
    """Is the sandbox running: pid, endpoint, and its groups' instances."""
    from goldenimage.aws import sandbox

    run(lambda r: sandbox.sandbox_status(env, r), json_out=json, debug=debug, human=sandbox.human_status)


sandbox_ns = Collection("sandbox")
sandbox_ns.add_task(sandbox_up, name="up")
sandbox_ns.add_task(sandbox_down, name="down")
sandbox_ns.add_task(sandbox_status, name="status")

ns = Collection(setup, bake, validate, images, fingerprint, promote, revoke, history, rotate, rollback, iam_policy)
ns.add_collection(sandbox_ns)
