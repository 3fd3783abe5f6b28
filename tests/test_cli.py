"""`veil protect` from the command line: exit codes, messages, folders, JSON, dry run, fail closed."""

import json
import shutil

import pytest
from clips import synthetic_frames
from typer.testing import CliRunner

from veil.cli import app
from veil.detect.base import _REGISTRY, register_detector
from veil.media.read import probe, read_frames

runner = CliRunner()


def veil(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, *words: str, output=None) -> None:
    """Exit 2 with one line that names the problem, and no output file."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert all(w in lines[0] for w in words), (words, lines)
    assert output is None or not output.exists()


@pytest.fixture
def face_clip(media, tmp_path):
    path = tmp_path / "face.mp4"
    shutil.copy(media("single_face.mp4"), path)
    return path


def test_protect_writes_output_and_json_summary(face_clip, tmp_path):
    result = veil("protect", face_clip, "-o", tmp_path / "safe.mp4", "--json", tmp_path / "s.json", "-q")
    assert result.exit_code == 0, result.output
    assert probe(tmp_path / "safe.mp4").frame_count == 72
    data = json.loads((tmp_path / "s.json").read_text())
    f = data["files"][0]
    for key in ("input", "output", "method", "detector", "frames", "faces_per_frame", "tracks", "frames_filled",
                "faces_filled", "frames_masked_on_error", "seconds", "fps_processed", "audio_streams_copied"):
        assert key in f
    assert f["frames"] == 72 and len(f["faces_per_frame"]) == 72 and f["tracks"] >= 1
    assert data["totals"]["files"] == 1 and data["failed"] == []


def test_protector_is_built_once_for_a_run_in_this_process(face_clip, tmp_path, monkeypatch):
    from veil.pipeline import ProtectOptions

    built = []
    original = ProtectOptions.build_protector
    monkeypatch.setattr(ProtectOptions, "build_protector", lambda self: built.append(1) or original(self))
    assert veil("protect", face_clip, "-o", tmp_path / "safe.mp4", "-q").exit_code == 0
    assert len(built) == 1  # the CLI's validation build is the one the run uses (models load once)


def test_default_output_name_is_beside_the_input(face_clip):
    assert veil("protect", face_clip, "-q").exit_code == 0
    assert (face_clip.parent / "face_protected.mp4").is_file()


def test_dry_run_writes_no_video(face_clip, tmp_path):
    result = veil("protect", face_clip, "--dry-run", "--json", tmp_path / "s.json", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.mp4", "s.json"]
    assert json.loads((tmp_path / "s.json").read_text())["files"][0]["faces"] >= 72


@pytest.mark.parametrize("name,content,message", [
    ("zero.mp4", b"", "empty"),
    ("text.mp4", b"this is a text file\n" * 10, "not a readable video"),
])
def test_bad_input_exit_2_one_line_no_output(tmp_path, name, content, message):
    src = tmp_path / name
    src.write_bytes(content)
    result = veil("protect", src, "-o", tmp_path / "out.mp4", "-q")
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.mp4").exists()


def test_truncated_input_exit_2_when_damage_stops_the_run(media, tmp_path):
    src = tmp_path / "cut.mp4"
    src.write_bytes(media("WolfgangLanger_Pexels.mp4").read_bytes()[:200_000])
    result = veil("protect", src, "-o", tmp_path / "out.mp4", "-q", "--on-damage", "stop")
    assert result.exit_code == 2 and "cut.mp4" in result.output
    assert not (tmp_path / "out.mp4").exists()


def test_missing_input_and_same_path(face_clip, tmp_path):
    assert veil("protect", tmp_path / "nope.mp4", "-o", tmp_path / "o.mp4").exit_code == 2
    before = face_clip.read_bytes()
    result = veil("protect", face_clip, "-o", face_clip)
    assert result.exit_code == 2 and "input itself" in result.output
    assert face_clip.read_bytes() == before


def test_unwritable_output_folder_is_exit_2(face_clip, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    refused(veil("protect", face_clip, "-o", blocker / "out.mp4", "-q"), "cannot", "file.txt")
    assert blocker.read_text() == "a file where a folder should be"


def test_bad_option_is_exit_2(face_clip, tmp_path):
    out = tmp_path / "o.mp4"
    refused(veil("protect", face_clip, "-o", out, "--method", "nope"), "nope", "blur", output=out)
    refused(veil("protect", face_clip, "-o", out, "-O", "nonsense=1"), "nonsense", output=out)
    refused(veil("protect", face_clip, "-o", out, "--mask-scale", "-2"), "mask", output=out)


def test_folder_is_mirrored_bad_files_reported_others_done(face_clip, clip, tmp_path):
    root = tmp_path / "archive"
    (root / "a" / "b").mkdir(parents=True)
    shutil.copy(face_clip, root / "one.mp4")
    clip("two.mkv", synthetic_frames(8))
    shutil.move(tmp_path / "two.mkv", root / "a" / "b" / "two.mkv")
    (root / "a" / "broken.mp4").write_bytes(b"")
    (root / "a" / "notes.txt").write_text("not a video")
    result = veil("protect", root, "-o", tmp_path / "safe", "--method", "mosaic", "-q")
    assert result.exit_code == 2
    assert "broken.mp4" in result.output and "notes.txt" in result.output
    produced = sorted(str(p.relative_to(tmp_path / "safe")) for p in (tmp_path / "safe").rglob("*")
                      if p.is_file() and not p.name.startswith(".veil-manifest"))
    assert produced == ["a/b/two.mkv", "one.mp4"]
    assert (tmp_path / "safe" / ".veil-manifest.sqlite").is_file()


def test_folder_without_output_folder_is_exit_2(tmp_path):
    (tmp_path / "d").mkdir()
    refused(veil("protect", tmp_path / "d"), "-o")
    assert not list((tmp_path / "d").iterdir())


@pytest.fixture
def broken_detector():
    @register_detector("broken-for-test")
    class Broken:
        name = "broken-for-test"

        def __init__(self, **_: object) -> None:
            pass

        def detect(self, image):
            return self.detect_batch([image])[0]

        def detect_batch(self, images):
            raise RuntimeError("simulated detector crash")

    yield
    del _REGISTRY["broken-for-test"]


def test_detection_failure_masks_the_whole_frame(broken_detector, clip, tmp_path):
    src = clip("in.mkv", synthetic_frames(6))
    result = veil("protect", src, "-o", tmp_path / "out.mkv", "--detector", "broken-for-test",
                  "--json", tmp_path / "s.json", "-q")
    assert result.exit_code == 0, result.output
    for frame in read_frames(tmp_path / "out.mkv"):
        assert frame.max() <= 2  # black, up to codec rounding: nothing of the original is shown
    assert json.loads((tmp_path / "s.json").read_text())["files"][0]["frames_masked_on_error"] == 6


def test_detection_failure_can_stop_the_run(broken_detector, clip, tmp_path):
    src = clip("in.mkv", synthetic_frames(6))
    result = veil("protect", src, "-o", tmp_path / "out.mkv", "--detector", "broken-for-test", "--on-error", "stop", "-q")
    assert result.exit_code == 1 and "simulated detector crash" in result.output
    assert not (tmp_path / "out.mkv").exists()
    assert not list(tmp_path.glob(".out*"))  # no temporary file left behind


def test_models_list_and_version():
    result = veil("models", "list")
    assert result.exit_code == 0 and "mtcnn/pnet.pt" in result.output and "facenet-pytorch" in result.output
    from veil import __version__

    version = veil("version")
    assert version.exit_code == 0 and __version__ in version.output


def test_detect_every_two_runs_the_detector_on_half_the_frames_and_still_covers_all(face_clip, tmp_path):
    result = veil("protect", face_clip, "-o", tmp_path / "o.mp4", "--detect-every", "2",
                  "--json", tmp_path / "s.json", "-q")
    assert result.exit_code == 0, result.output
    f = json.loads((tmp_path / "s.json").read_text())["files"][0]
    assert f["frames_detected"] == 36 and f["frames"] == 72
    assert min(f["faces_per_frame"]) >= 1  # the frames between detections are covered by the tracker


def test_detect_every_is_bounded_by_the_lookahead(face_clip, tmp_path):
    refused(veil("protect", face_clip, "-o", tmp_path / "o.mp4", "--detect-every", "17"), "detect", "between 1 and",
            output=tmp_path / "o.mp4")


def _commands():
    """Every command of the `veil` command line, with its path ("train qmvae")."""
    import typer.main

    def walk(group, path):
        for name, cmd in getattr(group, "commands", {}).items():
            if hasattr(cmd, "commands"):
                yield from walk(cmd, f"{path} {name}".strip())
            else:
                yield f"{path} {name}".strip(), cmd

    return dict(walk(typer.main.get_command(app), ""))


def test_every_learned_model_trains_with_veil_train():
    commands = _commands()
    assert {"train action", "train codec", "train qmvae"} <= set(commands)
    assert not any(c.startswith("action train") for c in commands)  # one way to train


def test_one_spelling_per_flag_in_every_command():
    for path, cmd in _commands().items():
        flags = {f for p in cmd.params for f in (*p.opts, *p.secondary_opts)}
        assert not {"--out", "--batch", "--no-resume-"} & flags, path
        assert not any(f.startswith("--no-no-") for f in flags), path
        if "-o" in flags:
            assert "--output" in flags, path
        if {"--resume", "--no-resume"} & flags:
            assert {"--resume", "--no-resume"} <= flags, path


def test_an_os_error_is_one_line_and_exit_1(face_clip, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "safe.mp4"))

    monkeypatch.setattr("veil.cli.protect.run_jobs", full_disk)
    result = veil("protect", face_clip, "-o", tmp_path / "safe.mp4")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: No space left on device") and "Traceback" not in result.output


def test_entry_point_exits_with_the_code_after_exit_handlers_and_output(tmp_path):
    """`main` leaves without tearing modules down, but after the exit handlers, with all output."""
    import subprocess
    import sys

    code = ("import atexit; atexit.register(lambda: print('handler ran', flush=True)); "
            "from veil.cli import main; main()")
    ok = subprocess.run([sys.executable, "-c", code, "version"], capture_output=True, text=True)
    assert ok.returncode == 0
    assert ok.stdout.splitlines()[0].strip() and ok.stdout.splitlines()[-1] == "handler ran"
    bad = subprocess.run([sys.executable, "-c", code, "protect", str(tmp_path / "missing.mp4"), "-o",
                          str(tmp_path / "out.mp4")], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "handler ran" in bad.stdout


def test_help_lists_every_command_with_its_own_summary_without_importing_torch():
    """`veil --help` shows the lazily registered commands by their summaries alone; each summary is
    the registered command's own one-line help (here, with every command registered)."""
    import subprocess
    import sys

    from typer.main import get_command

    from veil.cli import SUMMARIES

    def listing(group) -> dict:
        return {n: group.get_command(None, n).get_short_help_str(500) for n in group.list_commands(None)}

    code = ("import json, sys; from typer.main import get_command; from veil.cli import app, register_commands; "
            "register_commands(['--help']); g = get_command(app); "
            "print(json.dumps({n: g.get_command(None, n).get_short_help_str(500) for n in g.list_commands(None)})); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    quick, full = json.loads(out[0]), listing(get_command(app))
    assert out[1] == "False"
    assert quick == full and set(SUMMARIES) <= set(full)
