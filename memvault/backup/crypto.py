"""Optional encryption at rest: AES-256-GCM in 1 MiB chunks (streamable, truncation-proof).

Stored layout of an encrypted file::

    b"MVENC\\x01" | key id (8 bytes) | nonce prefix (8 bytes) |
    repeated: ciphertext length (4 bytes, big-endian) | ciphertext + 16-byte tag

Chunk i is sealed with nonce = prefix + i (4 bytes, big-endian) and associated data
header + i + final flag, so chunks cannot be reordered, dropped or the file cut short unnoticed.
The key id lets a wrong key be named as such before any decryption is attempted.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from memvault.backup.errors import BackupCorrupt, EncryptionKeyError

MAGIC = b"MVENC\x01"
HEADER_SIZE = len(MAGIC) + 8 + 8
CHUNK = 1 << 20
KEY_HINT = "set MEMVAULT_BACKUP_ENCRYPTION_KEY to the key the backup was written with"


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class Cipher:
    """AES-256-GCM keyed by SHA-256 of the configured secret (use a long random secret)."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"memvault-backup-key:" + secret.encode("utf-8")).digest()
        self.key_id = hashlib.sha256(b"memvault-key-id:" + self._key).digest()[:8]
        self._aead = AESGCM(self._key)

    @property
    def key_fingerprint(self) -> str:
        return self.key_id.hex()

    def writer(self, sink: Sink) -> EncryptingWriter:
        return EncryptingWriter(self, sink)

    def encrypt_chunk(self, nonce: bytes, plain: bytes, aad: bytes) -> bytes:
        """One AES-GCM sealed chunk (the framing is EncryptingWriter's)."""
        return self._aead.encrypt(nonce, plain, aad)

    def seal(self, data: bytes) -> bytes:
        out = bytearray()

        class _Buf:
            def write(self, b: bytes) -> int:
                out.extend(b)
                return len(b)

        writer = self.writer(_Buf())
        writer.write(data)
        writer.close()
        return bytes(out)

    def open_chunks(self, stored: Iterable[bytes], name: str) -> Iterator[bytes]:
        """Decrypt a stream of stored bytes into plaintext chunks, checking every tag."""
        buffer = bytearray()
        source = iter(stored)
        header: bytes | None = None
        index = 0
        final_seen = False
        exhausted = False
        while True:
            need = HEADER_SIZE if header is None else 4 + CHUNK + 16
            while not exhausted and len(buffer) < need:
                try:
                    buffer.extend(next(source))
                except StopIteration:
                    exhausted = True
            if header is None:
                if len(buffer) < HEADER_SIZE or not buffer.startswith(MAGIC):
                    raise EncryptionKeyError(
                        f"{name} is not encrypted by memvault (or is damaged at its start)",
                        hint="unset MEMVAULT_BACKUP_ENCRYPTION_KEY if the backup is not encrypted")
                header = bytes(buffer[:HEADER_SIZE])
                del buffer[:HEADER_SIZE]
                if header[len(MAGIC):len(MAGIC) + 8] != self.key_id:
                    raise EncryptionKeyError(
                        f"{name} was encrypted with another key (key id "
                        f"{header[len(MAGIC):len(MAGIC) + 8].hex()}, configured key id "
                        f"{self.key_fingerprint})", hint=KEY_HINT)
                continue
            if not buffer:
                if not final_seen:
                    raise BackupCorrupt(f"{name} is truncated: encrypted stream ends early",
                                        file=name)
                return
            if final_seen:
                raise BackupCorrupt(f"{name} has data after its final encrypted chunk", file=name)
            if len(buffer) < 4:
                raise BackupCorrupt(f"{name} is truncated inside a chunk header", file=name)
            (length,) = struct.unpack(">I", buffer[:4])
            if len(buffer) < 4 + length:
                raise BackupCorrupt(f"{name} is truncated inside encrypted chunk {index}",
                                    file=name)
            sealed = bytes(buffer[4:4 + length])
            del buffer[:4 + length]
            nonce = header[len(MAGIC) + 8:] + struct.pack(">I", index)
            is_final = exhausted and not buffer
            try:
                plain = self._aead.decrypt(nonce, sealed, header + struct.pack(">IB", index,
                                                                                 int(is_final)))
            except InvalidTag:
                if not is_final:
                    try:  # a final chunk followed by junk, or a genuinely damaged chunk?
                        self._aead.decrypt(nonce, sealed, header + struct.pack(">IB", index, 1))
                        final_seen = True
                        continue
                    except InvalidTag:
                        pass
                raise BackupCorrupt(
                    f"{name}: encrypted chunk {index} fails authentication (damaged, truncated "
                    "or tampered with)", file=name) from None
            final_seen = is_final
            index += 1
            if plain:
                yield plain


class EncryptingWriter:
    def __init__(self, cipher: Cipher, sink: Sink) -> None:
        self._cipher = cipher
        self._sink = sink
        self._header = MAGIC + cipher.key_id + os.urandom(8)
        self._buffer = bytearray()
        self._index = 0
        sink.write(self._header)

    def write(self, data: bytes) -> int:
        self._buffer.extend(data)
        while len(self._buffer) > CHUNK:
            self._emit(bytes(self._buffer[:CHUNK]), final=False)
            del self._buffer[:CHUNK]
        return len(data)

    def _emit(self, plain: bytes, *, final: bool) -> None:
        nonce = self._header[len(MAGIC) + 8:] + struct.pack(">I", self._index)
        aad = self._header + struct.pack(">IB", self._index, int(final))
        sealed = self._cipher.encrypt_chunk(nonce, plain, aad)
        self._sink.write(struct.pack(">I", len(sealed)) + sealed)
        self._index += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._emit(bytes(self._buffer), final=True)
        self._buffer.clear()


def cipher_for(secret: str | None) -> Cipher | None:
    return Cipher(secret) if secret else None
