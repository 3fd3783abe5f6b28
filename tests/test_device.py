"""``--device``: parsed strictly, refused clearly where the GPU provider is missing, and the
sessions opened after it are given its providers."""

import shutil

import pytest
from typer.testing import CliRunner

from veil import device
from veil.cli import app
from veil.errors import InputError

runner = CliRunner()


@pytest.fixture(autouse=True)
def cpu_after():
    yield
    device.use_device("cpu")


@pytest.mark.parametrize("spec, parsed", [("cpu", ("cpu", 0)), ("auto", ("auto", 0)), ("cuda", ("cuda", 0)),
                                          ("cuda:1", ("cuda", 1)), (" CUDA:0 ", ("cuda", 0))])
def test_device_values_parse(spec, parsed):
    assert device.parse_device(spec) == parsed


@pytest.mark.parametrize("spec", ["gpu", "cpu:1", "auto:0", "cuda:", "cuda:x", "", "cuda:-1"])
def test_other_device_values_are_refused(spec):
    with pytest.raises(InputError, match="--device must be"):
        device.parse_device(spec)


def test_cuda_without_the_provider_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(device, "_cuda_provider", lambda: False)
    with pytest.raises(InputError, match=r"veil\[gpu\]"):
        device.use_device("cuda")
    assert device.use_device("auto") == device.Device()  # auto falls back to the CPU
    assert device.onnx_providers() == ["CPUExecutionProvider"]


def test_cuda_gives_the_gpu_provider_first_and_keeps_the_cpu(monkeypatch):
    monkeypatch.setattr(device, "_cuda_provider", lambda: True)
    assert str(device.use_device("cuda:1")) == "cuda:1"
    assert device.onnx_providers() == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert str(device.use_device("auto")) == "cuda:0"


def test_detector_opens_its_session_with_the_device_providers(monkeypatch):
    import onnxruntime as ort

    from veil.pipeline import ProtectOptions

    seen = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda path, opts, providers: seen.append(providers)
                        or real(path, opts, providers=["CPUExecutionProvider"]))
    monkeypatch.setattr(device, "_cuda_provider", lambda: True)
    ProtectOptions(device="cuda:0").build_detector()
    assert seen == [[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]]


def test_protect_refuses_a_bad_device_and_a_missing_provider(media, tmp_path, monkeypatch):
    clip = tmp_path / "face.mp4"
    shutil.copy(media("single_face.mp4"), clip)
    bad = runner.invoke(app, ["protect", str(clip), "--device", "gpu", "-q"])
    assert bad.exit_code == 2 and "--device must be" in bad.output, bad.output
    monkeypatch.setattr(device, "_cuda_provider", lambda: False)
    missing = runner.invoke(app, ["protect", str(clip), "--device", "cuda", "-q"])
    assert missing.exit_code == 2 and "veil[gpu]" in missing.output, missing.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.mp4"]  # nothing written
    ok = runner.invoke(app, ["protect", str(clip), "--device", "auto", "-o", str(tmp_path / "out.mp4"), "-q"])
    assert ok.exit_code == 0 and (tmp_path / "out.mp4").is_file(), ok.output


def test_torch_networks_follow_the_device_where_torch_reaches_the_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(device, "_cuda_provider", lambda: False)
    monkeypatch.setattr(device, "_torch_cuda", lambda index=0: index < 2)  # a CUDA torch with two GPUs
    assert str(device.use_device("cuda:1")) == "cuda:1"
    assert device.torch_device() == torch.device("cuda", 1)
    assert device.onnx_providers() == ["CPUExecutionProvider"]  # no CUDA provider: ONNX Runtime stays on the CPU
    with pytest.raises(InputError, match="cuda:2"):
        device.use_device("cuda:2")
    assert str(device.use_device("auto")) == "cuda:0"
    device.use_device("cpu")
    assert device.torch_device() == torch.device("cpu")


def test_the_cloak_places_its_recognizers_on_the_device():
    import torch

    from veil.models.identity import get_recognizer
    from veil.protect import get_protector

    device.use_device("cpu")
    cloak = get_protector("cloak", recognizers="dlib")
    assert cloak.device == torch.device("cpu")
    assert {p.device for p in get_recognizer("dlib").net.parameters()} == {torch.device("cpu")}
