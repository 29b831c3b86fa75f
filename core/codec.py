"""Temporal payloads encrypted with AES-256-GCM (`EncryptionCodec`), and their keys.

Every client, worker and replayer encodes through this codec (`core.temporal`), so the
Temporal server stores workflow inputs, results, signals, queries, activity arguments,
memos and failure messages (with `DefaultFailureConverterWithEncodedAttributes`) only as
ciphertext. Search attributes are not payloads a codec sees: they stay readable and so
must never carry content (they hold ids, names and statuses).

An encrypted payload's metadata says `encoding: binary/encrypted` and names the key in
`encryption-key-id`; its data is nonce + AES-GCM(serialized original payload), with the
key id as associated data. Keys come from `COLONY_PAYLOAD_KEYS` (`id:base64key`, comma
separated: the first encrypts, every one decrypts, so keys rotate by putting a new one
first) or, when that is unset, the file `$COLONY_DATA_DIR/payload-keys` (one `id:key` a
line), created (mode 0600) on first use. Payloads without the encrypted encoding pass
through `decode` untouched: histories recorded before encryption still replay.
"""

import base64
import binascii
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from core.errors import ConfigError
from core.settings import Settings

ENCODING: Final = b"binary/encrypted"
KEY_ID_KEY: Final = "encryption-key-id"
PAYLOAD_KEYS_FILE: Final = "payload-keys"
KEY_ID_PATTERN: Final = r"[A-Za-z0-9_.-]{1,64}"
_NONCE_BYTES: Final = 12


class PayloadKeyError(ValueError):
    """A payload names a key this process does not have, or does not authenticate."""


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads; the first key encrypts, all keys decrypt."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        """Build the codec from `(key id, 32-byte key)` pairs, the encrypting key first.

        Raises:
            ConfigError: no keys, a malformed id, a key that is not 32 bytes, or a
                repeated id.
        """
        if not keys:
            raise ConfigError("at least one payload key is needed")
        self._keys: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not re.fullmatch(KEY_ID_PATTERN, key_id):
                raise ConfigError(
                    f"payload key id {key_id!r} must be 1 to 64 letters, digits, '_', '.' or '-'"
                )
            if len(key) != 32:
                raise ConfigError(f"payload key {key_id!r} must be 32 bytes (AES-256)")
            if key_id in self._keys:
                raise ConfigError(f"payload key id {key_id!r} appears twice")
            self._keys[key_id] = AESGCM(key)
        self.key_id = keys[0][0]
        """The id of the key new payloads are encrypted with."""

    @property
    def key_ids(self) -> list[str]:
        """Every key id this codec decrypts, the encrypting one first."""
        return list(self._keys)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload with the first key."""
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt encrypted payloads; others pass through (older, unencrypted histories).

        Raises:
            PayloadKeyError: a payload's key is unknown here, or its ciphertext was altered.
        """
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        """One payload, encrypted with the first key."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self.key_id].encrypt(
            nonce, payload.SerializeToString(), self.key_id.encode()
        )
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_KEY: self.key_id.encode()}, data=nonce + sealed
        )

    def decrypt(self, payload: Payload) -> Payload:
        """One payload decrypted, or returned as it is when it is not encrypted.

        Raises:
            PayloadKeyError: its key is unknown here, or its ciphertext was altered.
        """
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_KEY, b"").decode(errors="replace")
        aead = self._keys.get(key_id)
        if aead is None:
            raise PayloadKeyError(
                f"payload encrypted with key {key_id!r}, which is not in COLONY_PAYLOAD_KEYS "
                "(keep retired keys after the first one until no history needs them)"
            )
        data = payload.data
        try:
            plain = aead.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise PayloadKeyError(
                f"payload encrypted with key {key_id!r} does not authenticate"
            ) from None
        return Payload.FromString(plain)

    def decrypt_message(self, message: Message) -> None:
        """Decrypt, in place, every encrypted payload anywhere inside a protobuf message.

        For whole histories (`WorkflowHistory.events`), which Temporal's payload visitor
        does not cover; failures' encoded attributes are payloads too.
        """
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                items = list(value.values()) if _map_of_messages(field) else []
            elif isinstance(value, Message):
                items = [value]
            else:  # a repeated field
                items = list(value)
            for item in items:
                if isinstance(item, Payload):
                    item.CopyFrom(self.decrypt(item))
                else:
                    self.decrypt_message(item)


def _map_of_messages(field: object) -> bool:
    value_field = field.message_type.fields_by_name["value"]  # type: ignore[attr-defined]
    return value_field.message_type is not None


# -- keys ------------------------------------------------------------------------------


def generate_key() -> str:
    """A new random 32-byte key, url-safe base64."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def parse_keys(text: str, *, source: str = "COLONY_PAYLOAD_KEYS") -> list[tuple[str, bytes]]:
    """`id:base64key` entries separated by commas or newlines, in order.

    Raises:
        ConfigError: an entry is not `id:key` or its key is not base64.
    """
    keys: list[tuple[str, bytes]] = []
    for entry in re.split(r"[,\n]", text):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep:
            raise ConfigError(f"{source}: each key is 'id:base64key' (got an entry without ':')")
        try:
            key = base64.urlsafe_b64decode(encoded.strip().replace("+", "-").replace("/", "_"))
        except (binascii.Error, ValueError):
            raise ConfigError(f"{source}: key {key_id.strip()!r} is not base64") from None
        keys.append((key_id.strip(), key))
    return keys


def codec_from_settings(settings: Settings) -> EncryptionCodec:
    """This deployment's codec: `COLONY_PAYLOAD_KEYS`, or else the data dir's key file.

    Raises:
        ConfigError: the keys are malformed.
    """
    if settings.payload_keys is not None:
        text, source = settings.payload_keys.get_secret_value(), "COLONY_PAYLOAD_KEYS"
    else:
        path = settings.data_path / PAYLOAD_KEYS_FILE
        text, source = _key_file(path), str(path)
    return EncryptionCodec(parse_keys(text, source=source))


def _key_file(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked: a process starting at the same
    # time reads either no file or the complete one, and both agree on one key.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"local-{secrets.token_hex(4)}:{generate_key()}\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text()
