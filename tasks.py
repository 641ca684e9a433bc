"""Invoke tasks: the table of contents of the goldenimage library.

Every task takes --env (default: the `goldenimage.env` setting of Invoke's configuration,
`local`, and `goldenimage.sandbox_env`, `sandbox`, for the sandbox.* tasks; see README),
--json (one JSON document on stdout) and --debug; `command` adds them and runs the work
through `cli.run`. Exit codes: 0 done, 1 the operation failed or
was rolled back, 2 bad input or configuration.
"""

from invoke import Collection

from goldenimage.cli import command


@command("goldenimage.hostsetup:human", check="only check, install nothing")
def setup(c, check=False):
    """Install (apt, idempotent) or check what the host needs; print each tool's version."""
    from goldenimage import hostsetup

    return lambda r: hostsetup.setup(check, r)


@command("goldenimage.family:human_bake",
         image="image to bake, its parents first (default: the environment's only image, or web); "
               "a,b: these images",
         all="every image of the environment, parents first, independent ones in parallel",
         jobs="with --all or a,b: images baked at once (default: what the host's cores and memory allow)",
         force="rebuild even if a validated image has the same fingerprint")
def bake(c, env, image=None, force=False, all=False, jobs=None):
    """Fingerprint, then build, validate and register the image unless it is up to date."""
    from goldenimage import family

    return lambda r: family.bake_cmd(env, image, all, jobs, force, r)


@command("goldenimage.commands:human_validate", image_id="the image to boot and test again",
         verify_only="check its signed attestation only (boot nothing)")
def validate(c, env, image_id=None, verify_only=False):
    """Boot a registered image and run its testinfra suites (tests/image/common + its own) again."""
    from goldenimage import commands

    return lambda r: commands.validate(env, image_id, r, verify_only=verify_only)


@command("goldenimage.commands:human_verify", positional=["image_id"],
         image_id="the image whose attestation to check (or give it as the argument)")
def verify(c, env, image_id=None):
    """Check an image's signed attestation against its bytes (or AMI) and the trusted keys."""
    from goldenimage import commands

    return lambda r: commands.verify(env, image_id, r)


@command("goldenimage.commands:human_keys", name="init")
def keys_init(c, env):
    """Create the environment's signing key if it has none (local Ed25519 0600, or the KMS alias named); print its public key."""
    from goldenimage import commands

    return lambda r: commands.keys_init(env, r)


@command("goldenimage.commands:human_images", image="only images of this name",
         image_id="one image's provenance: manifest, fingerprint inputs, SBOM, validation",
         tree="the family: each image under its parent, outdated ones marked")
def images(c, env, image=None, image_id=None, tree=False):
    """List images: id, name, fingerprint, created, status, channels, outdated."""
    from goldenimage import commands

    return lambda r: commands.images(env, image, image_id, r, tree=tree)


@command("goldenimage.commands:human_fingerprint", image="image name (default: every image of the environment)",
         explain="list every input with its digest",
         against="an image id: which inputs differ from those it was built from")
def fingerprint(c, env, image=None, explain=False, against=None):
    """Print an image's fingerprint: the hash of every input that shapes it."""
    from goldenimage import commands

    return lambda r: commands.fingerprint_cmd(env, image, explain, against, r)


@command("goldenimage.commands:human_promote", image_id="a validated, non-revoked image",
         channel="channel name, e.g. stable")
def promote(c, env, image_id=None, channel=None):
    """Point a channel at a validated image; every move is kept in the channel's history."""
    from goldenimage import commands

    return lambda r: commands.promote(env, image_id, channel, r)


@command("goldenimage.commands:human_revoke", image_id="the image to revoke",
         reason="why (recorded with the image)", cascade="revoke the images built on it too")
def revoke(c, env, image_id=None, reason=None, cascade=False):
    """Revoke an image for good; channels on it fall back to their newest earlier valid image."""
    from goldenimage import commands

    return lambda r: commands.revoke(env, image_id, reason, r, cascade=cascade)


@command("goldenimage.commands:human_history", image="image name, e.g. web", channel="channel name, e.g. stable")
def history(c, env, image=None, channel=None):
    """A channel's moves (time, user, from, to) and its rollback target."""
    from goldenimage import commands

    return lambda r: commands.history(env, image, channel, r)


@command("goldenimage.rotation.executor:human_rotate",
         group="group under extra.rotation.groups in the environment's settings",
         image_id="AMI to rotate in (default: the group's channel)", channel="take the image from this channel",
         strategy="rolling or refresh (default: the group's policy)", dry_run="print the plan; change nothing",
         resume="continue an unfinished rotation whose owner is gone")
def rotate(c, env, group=None, image_id=None, channel=None, strategy=None, dry_run=False, resume=False):
    """Replace a group's instances with a new image; roll back when health says no."""
    from goldenimage.commands import required
    from goldenimage.rotation.commands import rotate_command

    def work(r):
        required(group=group)
        return rotate_command(r, env=env, group=group, image_id=image_id, channel=channel, strategy=strategy,
                              dry_run=dry_run, resume=resume)

    return work


@command("goldenimage.rotation.executor:human_rotate", group="group under extra.rotation.groups",
         dry_run="say what would happen; change nothing")
def rollback(c, env, group=None, dry_run=False):
    """Return a group to the exact image and launch-template version it ran before the last rotation."""
    from goldenimage.commands import required
    from goldenimage.rotation.commands import rollback_command

    def work(r):
        required(group=group)
        return rollback_command(r, env=env, group=group, dry_run=dry_run)

    return work


@command("goldenimage.gc:human_gc", apply="carry out the plan (default: print it only)",
         restore="an image id: take back its deprecate/disable stage (usable again)")
def gc(c, env, apply=False, restore=None):
    """Retention: keep, deprecate, disable or delete each image, with its reason (a dry run unless --apply)."""
    from goldenimage import gc

    return lambda r: gc.gc(env, apply, r, restore=restore)


@command("goldenimage.nightly:human_nightly",
         image="only this image (comma-separated list; with image families: the family) -- one CI job per family",
         jobs="images baked in parallel (default: the bake's own)",
         report_dir="where the JSON and Markdown reports go (default: extra.nightly.report_dir, else "
                    "<store>/reports/nightly/<env>)",
         webhook="POST the JSON report here (overrides extra.nightly.webhook.url)",
         plan="the drift check alone: per image, would it be rebuilt and why (nothing baked or written)")
def nightly(c, env, image=None, jobs=None, report_dir=None, webhook=None, plan=False):
    """Drift check, then bake what changed, validate, promote to the nightly channel, rotate, gc, report."""
    from goldenimage import nightly

    def work(r):
        n = None
        if jobs is not None:
            from goldenimage.errors import ConfigError

            try:
                n = int(jobs)
            except ValueError:
                raise ConfigError(f"--jobs: {jobs!r} is not a number") from None
        images = [i.strip() for i in image.split(",") if i.strip()] if image else None
        return nightly.nightly(env, r, images=images, jobs=n, report_dir=report_dir, webhook_url=webhook,
                               plan=plan)

    return work


@command("goldenimage.scaffold:human_new", name="new", image="the new image's name, e.g. db",
         parent="the image it is baked on (default: base, if the environment has it)")
def image_new(c, env, image=None, parent=None):
    """Add an image: its playbook, a role of its own, an image suite with one check, its settings entry."""
    from goldenimage import scaffold

    return lambda r: scaffold.new_image(env, image, parent, r)


@command("goldenimage.site:human_site",
         out="directory to write (default: <store>/site/<env>); replaced whole, only if this task wrote it",
         report_dir="where the nightly reports are (default: as invoke nightly writes them)")
def site(c, env, out=None, report_dir=None):
    """Write the registry as a static site: family, channels' history, images, bake timings, nightly runs, fleet."""
    from goldenimage import site

    return lambda r: site.site(env, out, r, report_dir=report_dir)


@command("goldenimage.aws.iam:human_policy", name="iam-policy")
def iam_policy(c, env):
    """Print the IAM policy granting exactly the AWS actions the toolkit calls."""
    from goldenimage.aws import iam

    return lambda r: iam.iam_policy(env, r)


@command("goldenimage.aws.allowed:human_allowed", name="allowed-amis")
def allowed_amis(c, env):
    """Print EC2 Allowed AMIs criteria admitting the environment's images, and how to apply them (audit mode first)."""
    from goldenimage.aws import allowed

    return lambda r: allowed.allowed_amis(env, r)


@command("goldenimage.sandbox:human_status", name="up", default_env="sandbox_env")
def sandbox_up(c, env):
    """Start the loopback AWS API (a moto server) and seed it from inventories/<env>."""
    from goldenimage import sandbox

    return lambda r: sandbox.sandbox_up(env, r)


@command("goldenimage.sandbox:human_down", name="down", default_env="sandbox_env")
def sandbox_down(c, env):
    """Stop the sandbox and forget its state."""
    from goldenimage import sandbox

    return lambda r: sandbox.sandbox_down(env, r)


@command("goldenimage.sandbox:human_status", name="status", default_env="sandbox_env")
def sandbox_status(c, env):
    """Is the sandbox running: pid, endpoint, and its groups' instances."""
    from goldenimage import sandbox

    return lambda r: sandbox.sandbox_status(env, r)


@command("goldenimage.commands:human_push", name="push",
         source="the local store to copy (default: this machine's)")
def store_push(c, env, source=None):
    """Copy a local store (images, stages, channel histories) into the environment's shared state."""
    from goldenimage import commands

    return lambda r: commands.store_push(env, source, r)


ns = Collection(setup, bake, validate, verify, images, fingerprint, promote, revoke, history, rotate, rollback, gc, nightly,
                site, iam_policy, allowed_amis,
                Collection("sandbox", sandbox_up, sandbox_down, sandbox_status),
                Collection("image", image_new), Collection("store", store_push), Collection("keys", keys_init))
ns.configure({"goldenimage": {"env": "local", "sandbox_env": "sandbox"}})
