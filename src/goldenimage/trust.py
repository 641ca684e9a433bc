"""Trust: the environment's keys (`trust:` settings), signing an image's attestation, and
verifying one where an image is about to be used (promote, rotate, a child's bake on its
parent, sandbox registration, `invoke verify`, `invoke validate --verify-only`).

A target gathers the `Evidence` of an image (its envelope bytes, and what the bytes about
to be used are: digest or AMI and snapshots, name, environment, parent's envelope digest);
`verify` checks the envelope's signature against the trusted keys, then what the
statement says (`attestation.check`), and raises `UntrustedImage` (exit 1) with one line
naming the image and the first check that failed.

Policy: an image without an attestation is refused unless `unsigned: allow`; an
attestation that is there but does not verify, or says something else than the image is,
is refused whatever the policy (it is evidence of tampering, not of an image made before
attestations were).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import attestation
from .errors import ConfigError, OperationFailed
from .paths import data_home
from .progress import Reporter
from .sections import KMS_PREFIX, TrustSettings
from .settings import Environment

# adapters.signing (securesystemslib, its signers and boto3: 0.16 s of imports) is imported by
# the functions that sign or verify, not by a command that checks nothing (a skipped bake)
if TYPE_CHECKING:
    from .adapters import signing

KmsClient = Callable[[], Any]  # the environment's KMS client, made when a kms: key is used
DEFAULT_POLICY = TrustSettings()  # an environment without `trust:`: unsigned images refused


class UntrustedImage(OperationFailed):
    """An image's attestation is missing, does not verify, or does not describe it."""


@dataclass(frozen=True)
class Evidence:
    """What a target knows of an image about to be used: its envelope (None: none) and what
    its bytes are (`attestation.Expect`); `where`: where the envelope was looked for."""

    expect: attestation.Expect
    envelope: bytes | None
    where: str


def envelope_digest(data: bytes | None) -> str | None:
    """The sha256 of an envelope's bytes, as a child's statement records its parent's."""
    return hashlib.sha256(data).hexdigest() if data is not None else None


def policy(env: Environment) -> TrustSettings:
    return env.settings.trust or DEFAULT_POLICY


def default_key(env: Environment) -> Path:
    """The environment's own signing key when its settings name none."""
    return data_home() / "keys" / f"{env.name}.ed25519"


def _path(env: Environment, ref: str) -> Path:
    path = Path(ref).expanduser()
    return path if path.is_absolute() else env.root / path


def signing_ref(env: Environment) -> str:
    """The signing key: `kms:<id>` or a file path (absolute)."""
    ref = policy(env).signing_key
    if ref is None:
        return str(default_key(env))
    return ref if ref.startswith(KMS_PREFIX) else str(_path(env, ref))


def _kms(kms: KmsClient | None, ref: str, env: Environment) -> Any:
    if kms is None:
        raise ConfigError(f"{env.rel(env.settings_file)}: field trust: {ref}: a KMS key needs target aws or sandbox")
    return kms()


def init_keys(env: Environment, reporter: Reporter, kms: KmsClient | None = None) -> dict[str, Any]:
    """`invoke keys.init`: the signing key of the environment, made if it is not there (a
    local Ed25519 key, or the KMS key the settings name, created with that alias), and its
    public key."""
    from .adapters import signing

    ref = signing_ref(env)
    if ref.startswith(KMS_PREFIX):
        client = _kms(kms, ref, env)
        key_id = ref[len(KMS_PREFIX):]
        created = False
        try:
            public = signing.kms_public_key(client, key_id)
        except ConfigError:
            raise
        except Exception as exc:  # NotFoundException: make it, when an alias names it
            if not key_id.startswith("alias/"):
                raise ConfigError(f"{env.rel(env.settings_file)}: field trust.signing_key: {ref}: {exc}") from None
            signing.create_kms_key(client, key_id, f"goldenimage attestations of environment {env.name}")
            public, created = signing.kms_public_key(client, key_id), True
        return {"env": env.name, "signing_key": ref, "created": created, "keyid": public.keyid,
                "public_key": signing.public_pem(public), "public_key_file": None}
    created = ensure_key(env, reporter, quiet=True)
    path = Path(ref)
    public = signing.load_signer(path).public_key
    return {"env": env.name, "signing_key": str(path), "created": created, "keyid": public.keyid,
            "public_key": signing.public_pem(public), "public_key_file": str(signing.public_path(path))}


def ensure_key(env: Environment, reporter: Reporter, *, quiet: bool = False) -> bool:
    """Make the environment's default local key if it has none yet (the first bake on a
    fresh machine), saying so; a key the settings name is never made behind the user's
    back. True: made now."""
    if policy(env).signing_key is not None or default_key(env).is_file():
        return False
    from .adapters import signing

    pub = signing.create_key(default_key(env))
    if not quiet:
        reporter.info(f"created the signing key of environment {env.name}: {default_key(env)} (public key {pub})")
    return True


def signer(env: Environment, reporter: Reporter, kms: KmsClient | None = None) -> signing.Signer:
    from .adapters import signing

    ref = signing_ref(env)
    if ref.startswith(KMS_PREFIX):
        return signing.KmsSigner(_kms(kms, ref, env), ref[len(KMS_PREFIX):])
    ensure_key(env, reporter)
    return signing.load_signer(Path(ref))


def trusted_keys(env: Environment, kms: KmsClient | None = None) -> list[signing.Key]:
    """The public keys attestations are verified with: `trust.trusted_keys`, else the
    signing key's own public key (none while a default key is not made yet)."""
    from .adapters import signing

    keys: list[signing.Key] = []
    listed = policy(env).trusted_keys
    for ref in listed or [signing_ref(env)]:
        if ref.startswith(KMS_PREFIX):
            keys.append(signing.kms_public_key(_kms(kms, ref, env), ref[len(KMS_PREFIX):]))
            continue
        path = _path(env, ref) if listed else signing.public_path(Path(ref))
        if listed or path.is_file():
            keys.append(signing.load_public(path))
    return keys


def sign(env: Environment, statement: dict[str, Any], reporter: Reporter, kms: KmsClient | None = None) -> bytes:
    """The DSSE envelope (JSON bytes) of `statement`, signed with the environment's key."""
    from .adapters import signing

    return signing.sign(attestation.encode(statement), attestation.PAYLOAD_TYPE, signer(env, reporter, kms))


def verify(env: Environment, evidence: Evidence, kms: KmsClient | None = None,
           keys: list[signing.Key] | None = None) -> dict[str, Any]:
    """Check an image's attestation (see the module's docstring); the checks made, or
    UntrustedImage with one line naming the image and what failed."""
    expect = evidence.expect
    who = f"image {expect.image_id} ({expect.name})"
    if evidence.envelope is None:
        if policy(env).unsigned == "allow":
            return {"image_id": expect.image_id, "verified": False, "admitted": "unsigned: allow",
                    "checks": [{"what": "attestation", "ok": False, "detail": f"none in {evidence.where}"}]}
        raise UntrustedImage(f"{who}: no attestation in {evidence.where} (trust.unsigned is deny)")
    from .adapters import signing

    keys = trusted_keys(env, kms) if keys is None else keys
    allow = policy(env).unsigned == "allow"
    if not keys and not allow:
        raise UntrustedImage(f"{who}: no trusted key to verify its attestation with (trust.trusted_keys)")
    strangers = signing.signed_by_none_of(evidence.envelope, keys)
    if strangers is not None and allow:
        # no more trust than no attestation at all, which this policy admits: another machine's
        # key (shared state without `trusted_keys`), or a key this environment does not list
        return {"image_id": expect.image_id, "verified": False, "admitted": "unsigned: allow",
                "checks": [{"what": "attestation", "ok": False,
                            "detail": f"signed by a key not trusted here ({', '.join(k[:16] + '…' for k in strangers)})"}]}
    try:
        payload, keyid = signing.open_envelope(evidence.envelope, attestation.PAYLOAD_TYPE, keys)
        doc = attestation.decode(payload)
    except signing.VerificationError as exc:
        why = ("unsigned" if "unsigned" in str(exc) else
               f"signed by a key not trusted ({', '.join(k[:16] + '…' for k in strangers)})" if strangers else
               "tampered (the signature of a trusted key does not match its bytes)")
        raise UntrustedImage(f"{who}: attestation signature does not verify with a trusted key: {why}") from None
    except ValueError as exc:
        raise UntrustedImage(f"{who}: attestation in {evidence.where} is unreadable: {exc}") from None
    verdict = attestation.check(doc, expect)
    if verdict.failed is not None:
        raise UntrustedImage(f"{who}: attestation {verdict.failed.what} does not match: {verdict.failed.detail}")
    return {"image_id": expect.image_id, "verified": True, "keyid": keyid,
            "envelope_sha256": envelope_digest(evidence.envelope),
            "checks": [{"what": "signature", "ok": True, "detail": f"key {keyid[:16]}…"},
                       *(c.as_dict() for c in verdict.checks)]}


def outcome(result: dict[str, Any]) -> str:
    """A verification's outcome in a few words, for a progress line."""
    return "attestation verified" if result.get("verified") else f"no attestation, admitted ({result.get('admitted')})"


def human_verify(result: dict[str, Any]) -> list[str]:
    head = (f"verified: {result['image_id']} (key {result['keyid'][:16]}…)" if result.get("verified")
            else f"admitted unsigned: {result['image_id']} ({result.get('admitted')})")
    return [head, *(f"  {'ok ' if c['ok'] else '-- '} {c['what']}: {c['detail']}" for c in result["checks"])]
