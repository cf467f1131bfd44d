"""File locks live in a directory that must be this user's alone: one that others can write (a shared /tmp), or that
another user owns, could let them stall or unserialise the writers of an image's attestations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vulnattest.errors import VulnattestError
from vulnattest.locks import FileLocks


def test_a_private_lock_directory_is_used_and_one_others_can_write_or_own_is_refused(tmp_path: Path):
    private = tmp_path / "private"
    with FileLocks(private)("127.0.0.1:5000/app@sha256:1"):
        assert oct(private.stat().st_mode & 0o777) == "0o700"  # made for this user alone

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(VulnattestError, match=r"lock directory .*shared is not this user's alone .*drwxrwxrwx.*"
                                              r"set attach_lock_dir"), FileLocks(shared)("key"):
        pass

    if os.getuid() != 0:
        pytest.skip("only root can give a directory to another user here")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, -1)
    with pytest.raises(VulnattestError, match="owner uid 65534"), FileLocks(theirs)("key"):
        pass
