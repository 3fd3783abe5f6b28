"""veil review: the sidecar and how --review applies it, the server's security, and the page itself
driven in Debian's headless Chromium against a real clip (judged on the rendered file)."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from clips import write_clip
from typer.testing import CliRunner

from veil.cli import app
from veil.detect import get_detector
from veil.detect.base import _REGISTRY, register_detector
from veil.errors import InputError
from veil.export.review import Review, load_review, save_review, sidecar_path
from veil.faces import REGION
from veil.media.read import read_frames
from veil.pipeline import ProtectOptions, protect_photo
from veil.review.analysis import analyse
from veil.review.server import TOKEN_HEADER, ReviewServer

runner = CliRunner()
ARTIFACTS = Path(__file__).resolve().parents[1] / "out" / "test-artifacts" / "review"
FRAMES = 24
HALF = 640


@pytest.fixture(scope="module")
def judge():
    return get_detector("mtcnn", detect_size=None)  # not the detector veil protects with


@pytest.fixture(scope="module")
def pair(media, tmp_path_factory):
    """24 frames of two real people side by side (1280x360): single_face.mp4 left, WolfgangLanger right."""
    left = [f for _, f in zip(range(FRAMES), read_frames(media("single_face.mp4")))]
    right = [f for _, f in zip(range(FRAMES), read_frames(media("WolfgangLanger_Pexels.mp4")))]
    folder = tmp_path_factory.mktemp("pair")
    return write_clip(folder / "pair.mkv", [np.concatenate([a, b], axis=1) for a, b in zip(left, right)])


@pytest.fixture(scope="module")
def right_only():
    """CenterFace with the left half of the frame switched off (a face the detector misses)."""

    @register_detector("right-half-for-test")
    class RightHalf:
        name = "right-half-for-test"

        def __init__(self, **options: object) -> None:
            self.inner = get_detector("centerface", **options)

        def detect(self, image):
            faces = self.inner.detect(image)
            return faces[(faces.boxes[:, 0] + faces.boxes[:, 2]) / 2 >= HALF]

    yield ProtectOptions(detector="right-half-for-test", method="solid")
    del _REGISTRY["right-half-for-test"]


@pytest.fixture
def served(pair, right_only, tmp_path, monkeypatch):
    """A review server on a copy of the clip in its own folder (its sidecar is written there)."""
    monkeypatch.setenv("VEIL_HOME", os.environ.get("VEIL_HOME") or str(Path.home() / ".cache" / "veil"))
    folder = tmp_path / "videos"
    folder.mkdir()
    video = folder / "pair.mkv"
    shutil.copy(pair, video)
    (tmp_path / "secret.txt").write_text("not for the page")
    detector, protector = right_only.build_detector(), right_only.build_protector()
    analysis = analyse(video, right_only, detector=detector)
    server = ReviewServer(analysis, right_only, detector=detector, protector=protector)
    thread = server.start()
    yield server
    server.stop()
    thread.join(timeout=10)


def _get(server, path: str, token: str | None = None, header: bool = True) -> tuple[int, bytes]:
    headers = {TOKEN_HEADER: token} if token is not None and header else {}
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(server, path: str, body: object, token: str | None) -> tuple[int, bytes]:
    headers = {TOKEN_HEADER: token} if token is not None else {}
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- the server ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/static/review.js", "/api/state", "/api/frame/0", "/api/boxes/0",
                                  "/api/thumb/0", "/api/preview/0", "/api/render", "/media/pair.mkv"])
def test_no_token_no_data(served, path):
    assert _get(served, path)[0] == 403
    assert _get(served, path, token="x" * 43)[0] == 403
    assert _get(served, f"{path}{'&' if '?' in path else '?'}token=wrong")[0] == 403
    assert _get(served, path, token=served.token)[0] in (200, 404)


def test_posts_need_the_token_in_the_header(served):
    edits = {"edits": [{"op": "protect", "track": 0, "on": False}]}
    assert _post(served, f"/api/edits?token={served.token}", edits, None)[0] == 403  # a cross-site form
    assert not sidecar_path(served.analysis.video).exists()
    assert _post(served, "/api/edits", edits, served.token)[0] == 200
    assert load_review(sidecar_path(served.analysis.video)).edits[0]["on"] is False


@pytest.mark.parametrize("path", ["/media/../secret.txt", "/media/%2e%2e/secret.txt", "/media/..%2fsecret.txt",
                                  "/media//etc/passwd", "/media/%2fetc%2fpasswd", "/media/link.txt"])
def test_only_files_under_the_videos_folder_are_served(served, path):
    (served.folder / "link.txt").symlink_to(served.folder.parent / "secret.txt")
    status, data = _get(served, path, token=served.token)
    assert status in (403, 404) and b"not for the page" not in data
    assert _get(served, "/media/pair.mkv", token=served.token)[0] == 200


def test_a_bad_edit_is_refused_and_nothing_is_saved(served):
    status, data = _post(served, "/api/edits", {"edits": [{"op": "region", "track": 1, "box": [5, 5, 1, 1]}]},
                         served.token)
    assert status == 400 and b"edits[0]: box" in data
    assert not sidecar_path(served.analysis.video).exists()


def test_the_page_stops_the_server(served):
    assert _post(served, "/api/stop", {}, served.token)[0] == 200
    assert served.stopped.wait(10)


# --- the sidecar and --review --------------------------------------------------------------------

def _review(pair, right_only, tmp_path) -> tuple[Path, Review]:
    video = tmp_path / "pair.mkv"
    shutil.copy(pair, video)
    return video, analyse(video, right_only, detector=right_only.build_detector()).new_review()


def test_edits_apply_in_order(pair, right_only, tmp_path):
    _, review = _review(pair, right_only, tmp_path)
    auto = review.boxes(5)
    assert [b["track"] for b in auto] == [0] and auto[0]["protected"] and auto[0]["kind"] == "face"
    review.edits = [
        {"op": "protect", "track": 0, "on": False, "from": 0, "to": 10},
        {"op": "protect", "track": 0, "on": True, "from": 5, "to": 5},
        {"op": "add", "track": 100000, "kind": "face", "boxes": [[5, 10.0, 20.0, 110.0, 140.0]]},
        {"op": "merge", "track": 100000, "into": 7},
        {"op": "box", "track": 0, "frame": 5, "box": [700.0, 50.0, 900.0, 300.0]},
        {"op": "region", "track": 200000, "from": 4, "to": 6, "box": [0.0, 0.0, 50.0, 40.0]},
    ]
    boxes = {b["track"]: b for b in review.boxes(5)}
    assert boxes[0]["protected"] and boxes[0]["box"] == [700.0, 50.0, 900.0, 300.0]
    assert boxes[7]["source"] == "added" and boxes[200000]["kind"] == "region"
    assert not review.boxes(4)[0]["protected"] and review.boxes(11)[0]["protected"]
    assert len(review.at(4)) == 1 and review.at(4).kinds.tolist() == [REGION]
    assert len(review.at(5)) == 3 and len(review.at(7)) == 0  # track 0 is off there, the rest ends


def test_protect_with_review_protects_exactly_the_reviewed_boxes(pair, right_only, judge, tmp_path):
    video, review = _review(pair, right_only, tmp_path)
    # The right face is left on frames 0-11; the left one (never detected) is added by hand.
    review.edits = [{"op": "protect", "track": 0, "on": False, "from": 0, "to": 11},
                    {"op": "add", "track": 100000, "kind": "face",
                     "boxes": [[f, 180.0, 40.0, 410.0, 330.0] for f in range(FRAMES)]}]
    save_review(sidecar_path(video), review)
    result = runner.invoke(app, ["protect", str(video), "--review", str(sidecar_path(video)), "-o",
                                 str(tmp_path / "out.mkv"), "--method", "solid", "-q"])
    assert result.exit_code == 0, result.output
    out = list(read_frames(tmp_path / "out.mkv"))
    left = [len(judge.detect(np.ascontiguousarray(f[:, :HALF]))) for f in out]
    right = [len(judge.detect(np.ascontiguousarray(f[:, HALF:]))) for f in out]
    assert left == [0] * FRAMES
    assert right[:12] == [1] * 12 and right[12:] == [0] * 12


@pytest.mark.parametrize("change, key", [
    (lambda d: d.update(schema="other"), "schema"),
    (lambda d: d.update(version=7), "version"),
    (lambda d: d["video"].pop("sha256"), "video.sha256"),
    (lambda d: d.update(edits=[{"op": "paint"}]), "edits[0]: op"),
    (lambda d: d.update(edits=[{"op": "protect", "track": 0, "on": "no"}]), "edits[0]: on"),
    (lambda d: d.update(edits=[{"op": "add", "track": 9, "boxes": [[0, 1, 2]]}]), "edits[0]: boxes[0]"),
    (lambda d: d["tracks"].update(columns=["frame"]), "tracks.columns"),
])
def test_a_bad_sidecar_exits_2_naming_the_key(pair, right_only, tmp_path, change, key):
    video, review = _review(pair, right_only, tmp_path)
    data = review.to_dict()
    change(data)
    sidecar = tmp_path / "bad.veil-review.json"
    sidecar.write_text(json.dumps(data))
    result = runner.invoke(app, ["protect", str(video), "--review", str(sidecar), "-o", str(tmp_path / "o.mkv")])
    assert result.exit_code == 2 and key in result.output, result.output
    assert not (tmp_path / "o.mkv").exists()


def test_a_sidecar_for_another_file_is_refused(pair, right_only, media, tmp_path):
    video, review = _review(pair, right_only, tmp_path)
    save_review(sidecar_path(video), review)
    other = tmp_path / "other.mp4"
    shutil.copy(media("single_face.mp4"), other)
    result = runner.invoke(app, ["protect", str(other), "--review", str(sidecar_path(video)), "-o",
                                 str(tmp_path / "o.mp4")])
    assert result.exit_code == 2 and "made for another file" in result.output
    with pytest.raises(InputError, match="for videos"):
        protect_photo(media("obama.jpg"), tmp_path / "o.jpg", ProtectOptions(review=str(sidecar_path(video))))


# --- the page, in a real browser ------------------------------------------------------------------

def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromium-driver are not installed (Debian: apt-get install -y chromium "
                    "chromium-driver; make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1600,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(predicate, seconds: float = 60.0, what: str = "the page"):
    from selenium.common.exceptions import StaleElementReferenceException

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            value = predicate()
        except StaleElementReferenceException:  # the page redrew the element between finding and reading it
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_page_adds_a_missed_face_leaves_a_track_and_renders(served, judge):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser = _browser()
    try:
        browser.get(served.url)
        tracks = lambda: browser.find_elements(By.CSS_SELECTOR, "li.track")  # noqa: E731
        _wait(lambda: len(tracks()) == 1, what="the detected track")  # the right face only
        _wait(lambda: browser.execute_script("return document.getElementById('frame').complete && "
                                             "document.getElementById('overlay').width > 0"))
        browser.save_screenshot(str(ARTIFACTS / "1-tracks.png"))

        # Draw a box around the left face (which the detector never saw) on frame 0.
        browser.find_element(By.ID, "mode-face").click()
        canvas = browser.find_element(By.ID, "overlay")
        k = browser.execute_script("return document.getElementById('frame').clientWidth") / 1280
        cw, ch = canvas.size["width"], canvas.size["height"]
        x1, y1, x2, y2 = 190 * k, 50 * k, 400 * k, 320 * k
        ActionChains(browser).move_to_element_with_offset(canvas, int(x1 - cw / 2), int(y1 - ch / 2)) \
            .click_and_hold().move_by_offset(int(x2 - x1), int(y2 - y1)).release().perform()
        _wait(lambda: len(tracks()) == 2, what="the drawn face's track")
        browser.save_screenshot(str(ARTIFACTS / "2-drawn-face.png"))

        # Leave the detected (right) face as it is.
        browser.find_element(By.CSS_SELECTOR, 'li.track[data-track="0"] input.protect').click()
        _wait(lambda: browser.execute_script("return S.edits.length") == 2, what="the edit to be saved")
        _wait(lambda: not browser.find_element(By.CSS_SELECTOR, 'li.track[data-track="0"] input.protect')
              .is_selected(), what="the track shown off")
        review = load_review(served.sidecar)
        assert [e["op"] for e in review.edits] == ["add", "protect"]
        added = review.edits[0]["boxes"]
        assert added[0][0] == 0 and added[-1][0] == FRAMES - 1  # followed to the end of the clip

        browser.find_element(By.ID, "render").click()
        _wait(lambda: browser.find_element(By.ID, "render-status").text.startswith(("done", "failed")),
              seconds=180, what="the render")
        assert browser.find_element(By.ID, "render-status").text.startswith("done")
        browser.save_screenshot(str(ARTIFACTS / "3-rendered.png"))
        browser.find_element(By.ID, "stop").click()
        assert served.stopped.wait(10)
    finally:
        browser.quit()
    out = list(read_frames(served.output))
    assert len(out) == FRAMES
    left = [len(judge.detect(np.ascontiguousarray(f[:, :HALF]))) for f in out]
    right = [len(judge.detect(np.ascontiguousarray(f[:, HALF:]))) for f in out]
    assert sum(left) == 0  # the face drawn by hand is covered on every frame
    assert sum(right) >= FRAMES - 1  # the track turned off is left visible


def test_the_command_serves_until_the_page_stops_it(media, tmp_path):
    import re
    import subprocess
    import sys

    video = tmp_path / "clip.mp4"
    shutil.copy(media("single_face.mp4"), video)
    proc = subprocess.Popen([sys.executable, "-c", "from veil.cli import main; main()", "review", str(video),
                             "--no-open"], stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:
            if (found := re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)):
                url, token = found.groups()
                break
        assert url is not None
        with urllib.request.urlopen(urllib.request.Request(f"{url}/api/state", headers={TOKEN_HEADER: token}),
                                    timeout=30) as r:
            state = json.loads(r.read())
        assert state["frames"] == 72 and len(state["tracks"]) == 1 and state["command"].startswith("veil protect")
        request = urllib.request.Request(f"{url}/api/stop", data=b"{}", method="POST", headers={TOKEN_HEADER: token})
        urllib.request.urlopen(request, timeout=30).read()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    result = runner.invoke(app, ["review", str(tmp_path / "missing.mp4"), "--no-open"])
    assert result.exit_code == 2 and "missing.mp4" in result.output
