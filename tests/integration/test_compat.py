"""The names vulnattest takes from past its dependencies' public APIs (`vulnattest.compat`, `flows.prefect_compat`)
still exist and behave as used: an upgrade that moves one fails here, naming it, before it fails in a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vulnattest.demo.testpki import TestSigstore


def test_sigstore_expired_certificate_is_still_an_exception_of_its_signer():
    from sigstore.errors import Error

    from vulnattest.compat.sigstore import ExpiredCertificate

    assert issubclass(ExpiredCertificate, Exception)
    assert not issubclass(ExpiredCertificate, Error)  # the signer catches it apart from sigstore's errors


def test_sigstore_trusted_root_serialises_back_to_what_it_read(pki: TestSigstore, tmp_path: Path):
    from sigstore.models import TrustedRoot

    from vulnattest.compat.sigstore import trusted_root_json

    written = pki.trusted_root_json(rekor_url="http://rekor.invalid")
    (tmp_path / "trusted_root.json").write_bytes(written)

    again = trusted_root_json(TrustedRoot.from_file(str(tmp_path / "trusted_root.json")))

    assert json.loads(again)["tlogs"] == json.loads(written)["tlogs"]
    assert json.loads(again)["certificateAuthorities"] == json.loads(written)["certificateAuthorities"]


@pytest.mark.usefixtures("prefect_server")
def test_prefect_secret_blocks_load_synchronously():
    from prefect.blocks.system import Secret

    from flows.prefect_compat import load_secret

    Secret(value="s3cr3t").save("vulnattest-compat", overwrite=True)

    assert load_secret("vulnattest-compat").value.get_secret_value() == "s3cr3t"
    with pytest.raises(ValueError, match="Unable to find block document named vulnattest-compat-missing"):
        load_secret("vulnattest-compat-missing")
