"""Test helper: run the AudioSet prepare script and SIGKILL the process at a chosen moment.

    python tests/sigkill_prepare.py MOMENT <create_h5pymp3_dataset arguments>

MOMENT: ``encode:N`` (before encoding clip N), ``shard:N`` (the N-th shard file written but not
yet renamed), ``assemble:N`` (the output file half-written: after N shards copied into it). The
process kills itself with SIGKILL (no cleanup runs), as a kill from outside at that moment would.
"""

from __future__ import annotations

import os
import signal
import sys

from audioset.prepare_scripts import create_h5pymp3_dataset as prepare
from helpers.data import hdf5_writer


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    moment, n = sys.argv[1].split(":")
    count = [0]

    def counted(real):
        def wrapper(*args, **kwargs):
            count[0] += 1
            if count[0] == int(n):
                die()
            return real(*args, **kwargs)
        return wrapper

    if moment == "encode":
        prepare.encode_mp3 = counted(prepare.encode_mp3)
    elif moment == "shard":
        real_replace = os.replace
        hdf5_writer.os.replace = lambda src, dst: (counted(real_replace) if str(src).endswith(".h5.tmp")
                                                    else real_replace)(src, dst)
    elif moment == "assemble":
        real_file = hdf5_writer.h5py.File
        hdf5_writer.h5py.File = lambda path, mode="r", **k: (
            counted(real_file) if "shard_" in str(path) and mode == "r" else real_file)(path, mode, **k)
    return prepare.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
