"""Files whose headers lie about their size: refused before decoding (exit 2), in bounded memory."""

import resource
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

VEIL = [sys.executable, "-c", "from veil.cli import main; main()"]
MEMORY = 6 * 2**30  # address space for the whole command, torch included; the bomb would need 30 GB


def _run(*args, memory: int | None = MEMORY) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return subprocess.run([*VEIL, *map(str, args)], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit if memory else None)


def _png_claiming(path, width: int, height: int):
    """A real 8x8 PNG whose header is rewritten to claim `width` x `height` (checksum fixed)."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_a_photo_bomb_is_refused_before_it_is_decoded(tmp_path):
    bomb = _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    done = _run("protect", bomb, "-o", tmp_path / "out.png")
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "100000x100000" in line and "--max-pixels" in line
    assert not (tmp_path / "out.png").exists()


def test_max_pixels_is_the_users_to_set(media, tmp_path):
    done = _run("protect", media("single_face.mp4"), "-o", tmp_path / "out.mp4", "--max-pixels", "100000")
    assert done.returncode == 2 and "640x360" in done.stderr and not (tmp_path / "out.mp4").exists()
    done = _run("protect", media("obama.jpg"), "-o", tmp_path / "out.jpg", "--max-pixels", "100000")
    assert done.returncode == 2 and "910x1137" in done.stderr
    done = _run("protect", media("obama.jpg"), "-o", tmp_path / "ok.jpg", "--max-pixels", "0")
    assert done.returncode == 0, done.stderr
