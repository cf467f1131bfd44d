"""moto's KMS server, with `Sign` made to follow AWS's documented contract where moto's does not.

AWS KMS ``Sign`` takes ``MessageType=DIGEST`` as an already-computed digest and signs it as given, and refuses ``RAW``
messages over 4096 bytes. moto 5 hashes a DIGEST message again and accepts RAW messages of any size. Everything else
(keys, aliases, GetPublicKey, the HTTP protocol boto3 speaks) is moto's own. Run it as a separate process, so the
session's plain moto server (whose DIGEST behaviour tests/integration/test_kms.py pins) is untouched:

    python -m tests.kms_server PORT

or, from a test, `with KmsTestServer() as server: … server.url`.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Self

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from moto.kms.exceptions import ValidationException
from moto.kms.responses import KmsResponse
from moto.server import ThreadedMotoServer

from vulnattest.localservice import LocalService

RAW_LIMIT = 4096
_moto_sign = KmsResponse.sign


def _sign(self: KmsResponse) -> str:
    message = self._get_param("Message") or b""
    message_type = self._get_param("MessageType") or "RAW"
    if message_type == "RAW":
        if len(message) > RAW_LIMIT:
            raise ValidationException(f"Message must be at most {RAW_LIMIT} bytes for MessageType RAW")
        return _moto_sign(self)
    if message_type != "DIGEST":
        raise ValidationException(f"MessageType must be RAW or DIGEST, not {message_type!r}")
    self._validate_key_id(self._get_param("KeyId"))
    key = self.kms_backend.describe_key(self._get_param("KeyId"))
    if (key.key_usage, key.key_spec, self._get_param("SigningAlgorithm"), len(message)) != (
            "SIGN_VERIFY", "ECC_NIST_P256", "ECDSA_SHA_256", 32):
        raise ValidationException("this server signs DIGEST messages with ECC_NIST_P256 signing keys, ECDSA_SHA_256 "
                                  "and 32-byte digests only")
    signature = key.private_key.private_key.sign(  # type: ignore[attr-defined]
        message, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    return json.dumps({"KeyId": key.arn, "Signature": base64.b64encode(signature).decode(),
                       "SigningAlgorithm": "ECDSA_SHA_256"})


class KmsTestServer(LocalService):
    """This server in its own process on a loopback port."""

    name = "kms-test-server"

    def start(self, timeout: float = 30.0) -> Self:
        """Start it and wait until it answers."""
        self.url = f"http://127.0.0.1:{self.port}"
        self._launch([sys.executable, "-m", "tests.kms_server", str(self.port)], f"{self.url}/moto-api/", timeout,
                     cwd=Path(__file__).resolve().parents[1])
        return self


def main(port: int) -> None:
    """Serve on 127.0.0.1:`port` until killed."""
    KmsResponse.sign = _sign  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(int(sys.argv[1]))
