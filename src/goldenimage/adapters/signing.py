"""Keys and signatures: a local Ed25519 key file, or an AWS KMS asymmetric key; DSSE
envelopes signed and verified with securesystemslib (no crypto of our own).

A local private key is a PKCS#8 PEM file created with mode 0600 (never readable by
others, not even for a moment: the file is opened with that mode); its public key is the
PEM file beside it (`<key>.pub`). A KMS key (`kms:<key id, ARN or alias>`) signs with
`ECDSA_SHA_256` through `kms.sign` (the payload is sent, KMS hashes it), and its public
key comes from `kms.get_public_key`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, Key, Signature, Signer, SSlibKey

from ..errors import ConfigError

KMS_PREFIX = "kms:"
KMS_ALGORITHM = "ECDSA_SHA_256"
KMS_SCHEME = "ecdsa-sha2-nistp256"

__all__ = ["Envelope", "Key", "Signer", "VerificationError"]


def public_path(private: Path) -> Path:
    """Where a local key's public half is: beside it, `.pub` added."""
    return private.with_name(private.name + ".pub")


def create_key(path: Path) -> Path:
    """A new Ed25519 key at `path` (0600; its directory 0700) and its public key beside it;
    ConfigError if `path` exists (a key is never overwritten). Returns the public key's path."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: a key exists already; it is never overwritten") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = public_path(path)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return pub


def load_signer(path: Path) -> Signer:
    """The signer of a local private key file; ConfigError naming the file if it is not
    one, or if others may read it."""
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: signing key: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"{path}: signing key has mode {mode:o}; it must be 0600 (chmod 600 {path})")
    try:
        private = serialization.load_pem_private_key(data, password=None)
        return CryptoSigner(private)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a PEM private key: {exc}") from None


def load_public(path: Path) -> Key:
    """A public key from a PEM file; ConfigError naming the file otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: trusted key: {exc.strerror}") from None
    try:
        return SSlibKey.from_crypto(serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a PEM public key: {exc}") from None


def public_pem(key: Key) -> str:
    """A public key as PEM text (what `keys.init` prints)."""
    value = getattr(key, "keyval", {}).get("public", "")
    if str(value).startswith("-----BEGIN"):
        return str(value)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
    return raw.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class KmsSigner(Signer):
    """A securesystemslib Signer whose private key stays in AWS KMS (an `ECC_NIST_P256`
    key of usage SIGN_VERIFY): `kms.sign` makes each signature."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self.kms, self.key_id = kms, key_id
        self._public = kms_public_key(kms, key_id)

    @classmethod
    def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key, secrets_handler: Any = None) -> Signer:
        raise ValueError("a KmsSigner is made with a KMS client, not from a URI")

    @property
    def public_key(self) -> Key:
        return self._public

    def sign(self, payload: bytes) -> Signature:
        got = self.kms.sign(KeyId=self.key_id, Message=payload, MessageType="RAW", SigningAlgorithm=KMS_ALGORITHM)
        return Signature(self._public.keyid, bytes(got["Signature"]).hex())


def kms_public_key(kms: Any, key_id: str) -> Key:
    """The public key of a KMS signing key (its DER SubjectPublicKeyInfo, from KMS)."""
    got = kms.get_public_key(KeyId=key_id)
    if KMS_ALGORITHM not in (got.get("SigningAlgorithms") or [KMS_ALGORITHM]):
        raise ConfigError(f"KMS key {key_id}: does not sign with {KMS_ALGORITHM} (an ECC_NIST_P256 key is needed)")
    return SSlibKey.from_crypto(serialization.load_der_public_key(bytes(got["PublicKey"])), scheme=KMS_SCHEME)


def create_kms_key(kms: Any, alias: str, description: str) -> str:
    """A new KMS signing key (ECC_NIST_P256, SIGN_VERIFY) named `alias`; its key id."""
    key_id = str(kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY",
                                Description=description)["KeyMetadata"]["KeyId"])
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return key_id


def sign(payload: bytes, payload_type: str, signer: Signer) -> bytes:
    """A DSSE envelope of `payload` signed by `signer`, as the JSON bytes that are stored."""
    envelope = Envelope(payload, payload_type, {})
    envelope.sign(signer)
    return json.dumps(envelope.to_dict(), indent=2, sort_keys=True).encode() + b"\n"


def open_envelope(data: bytes, payload_type: str, keys: list[Key]) -> tuple[bytes, str]:
    """The payload of an envelope signed by one of `keys`, and that key's id.

    ValueError: the bytes are not a DSSE envelope of `payload_type`; VerificationError: no
    signature verifies with a trusted key (tampered, or signed by another key)."""
    try:
        doc = json.loads(data)
        envelope = Envelope.from_dict(doc)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a DSSE envelope ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # securesystemslib's FormatError, binascii.Error of bad base64
        raise ValueError(f"not a DSSE envelope ({exc})") from None
    if envelope.payload_type != payload_type:
        raise ValueError(f"payload type {envelope.payload_type!r}, not {payload_type!r}")
    if not envelope.signatures:
        raise VerificationError("the envelope is unsigned")
    accepted = envelope.verify(keys, 1)
    return envelope.payload, next(iter(accepted))


def signed_by_none_of(data: bytes, keys: list[Key]) -> list[str] | None:
    """The key ids an envelope's signatures name when none of them is one of `keys` (a key
    this machine does not trust: not a tampered envelope); None when one is, or the bytes are
    not an envelope."""
    try:
        ids = [str(sig["keyid"]) for sig in json.loads(data).get("signatures") or []]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
        return None
    known = {k.keyid for k in keys}
    return ids if ids and not known.intersection(ids) else None
