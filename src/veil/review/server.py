"""The local web server of `veil review`: the page, the frames, the edits, the render.

Bottle (a one-file WSGI framework) on the standard library's WSGI server, one thread per request,
bound to 127.0.0.1 unless told otherwise. Security, for a page that shows people who are to be
protected:

- a random token (32 bytes) on every request, the page's own files included: in the query for
  GETs (the URL printed), in the ``X-Veil-Token`` header for everything the page sends; no token,
  no data (403);
- a POST must carry the token in the header: a form or a link from another site cannot (CSRF);
- ``/media/<path>`` serves only files under the video's own folder (``..``, absolute paths and
  links that lead outside are refused);
- the server stops when the page says so (``POST /api/stop``) or on Ctrl-C.
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import secrets
import threading
from dataclasses import replace
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bottle
import cv2

from veil.errors import InputError
from veil.export.review import Review, check_edit, save_review, sidecar_path
from veil.faces import KINDS, PERSON
from veil.pipeline import ProtectOptions, protect_video
from veil.protect import ProtectState
from veil.review.analysis import Analysis, follow, thumbnail

__all__ = ["ReviewServer", "TOKEN_HEADER"]

TOKEN_HEADER = "X-Veil-Token"
STATIC = Path(__file__).parent / "static"
ADDED_IDS, REGION_IDS = 100_000, 200_000  # ids of drawn tracks and regions (the pass's are smaller)


class _Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


def _jpeg(rgb) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])[1].tobytes()


class ReviewServer:
    """Serves one video's review on ``http://host:port/?token=...`` (`url`) until `stop`."""

    def __init__(self, analysis: Analysis, options: ProtectOptions, *, detector: Any, protector: Any,
                 host: str = "127.0.0.1", port: int = 0, output: Path | None = None) -> None:
        self.analysis, self.options, self.detector, self.protector = analysis, options, detector, protector
        self.token = secrets.token_urlsafe(32)
        self.sidecar = sidecar_path(analysis.video)
        self.review = analysis.review()
        self.output = output or analysis.video.with_name(f"{analysis.video.stem}_reviewed{analysis.video.suffix}")
        self.folder = analysis.video.parent.resolve()
        self.lock = threading.Lock()
        self.render_state: dict[str, Any] = {"state": "idle"}
        self.stopped = threading.Event()
        self.app = self._routes()
        self.httpd = make_server(host, port, self.app, server_class=_Threaded, handler_class=_Quiet)
        self.host, self.port = host, self.httpd.server_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    def serve(self) -> None:
        """Serve until `stop` (or the page's stop); Ctrl-C stops it too."""
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self.httpd.server_close()
            self.stopped.set()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve, daemon=True)
        thread.start()
        return thread

    def stop(self, after_s: float = 0.0) -> None:
        """End `serve` (`after_s` later: the page's own stop request gets its answer first)."""
        timer = threading.Timer(after_s, self.httpd.shutdown)
        timer.daemon = True
        timer.start()

    # --- what the page asks for -------------------------------------------------------------

    def command(self) -> str:
        """The command that renders the saved review, as the page's Render button runs it."""
        method = f" --method {self.options.method}" if self.options.method != "blur" else ""
        return (f"veil protect {self.analysis.video.name} --review {self.sidecar.name} "
                f"-o {self.output.name}{method}")

    def state(self) -> dict[str, Any]:
        a, review = self.analysis, self.review
        return {"video": review.video, "frames": a.frames, "width": a.width, "height": a.height, "fps": a.fps,
                "edits": review.edits, "tracks": self.tracks(review), "sidecar": self.sidecar.name,
                "command": self.command(), "output": self.output.name, "method": self.options.method,
                "kinds": list(KINDS)}

    def tracks(self, review: Review) -> list[dict[str, Any]]:
        """Every track with its timeline: runs of [from, to, state] (detected, filled, off)."""
        rows: dict[int, dict[str, Any]] = {}
        for index in range(self.analysis.frames):
            for b in review.boxes(index):
                state = "off" if not b["protected"] else "detected" if b["detected"] else "filled"
                entry = rows.setdefault(b["track"], {"id": b["track"], "kind": b["kind"], "source": b["source"],
                                                     "runs": []})
                runs = entry["runs"]
                if runs and runs[-1][2] == state and runs[-1][1] == index - 1:
                    runs[-1][1] = index
                else:
                    runs.append([index, index, state])
        return [rows[k] for k in sorted(rows)]

    def set_edits(self, edits: Any) -> Review:
        if not isinstance(edits, list):
            raise InputError("edits must be a list")
        checked = [check_edit(e, f"edits[{i}]") for i, e in enumerate(edits)]
        with self.lock:
            self.review = Review(self.review.video, self.review.tracks, checked)
            save_review(self.sidecar, self.review)
            return self.review

    def preview(self, index: int) -> bytes:
        """The frame as the render would protect it, with the edits so far."""
        image = self.analysis.image(index)
        faces = self.review.at(index)
        outline = getattr(self.detector, "outline", None)
        if outline is not None and (faces.kinds == PERSON).any():
            faces = outline(image, faces)
        state = ProtectState(seed=self.options.seed, frame_index=index)
        return _jpeg(self.protector(image, faces, state) if len(faces) else image)

    def follow(self, frame: int, box: list[float]) -> dict[str, Any]:
        rows = follow(self.analysis, self.detector, frame, box, self.options.tracker.iou_match)
        used = [e["track"] for e in self.review.edits if e["op"] == "add"]
        return {"track": max(used, default=ADDED_IDS - 1) + 1, "boxes": rows}

    def render(self) -> None:
        """Run ``veil protect VIDEO --review SIDECAR -o OUTPUT`` (the command shown) in the background."""
        with self.lock:
            if self.render_state["state"] == "running":
                raise InputError("a render is already running")
            save_review(self.sidecar, self.review)
            self.render_state = {"state": "running", "done": 0, "total": self.analysis.frames,
                                 "output": self.output.name, "command": self.command()}
        options = replace(self.options, review=str(self.sidecar), dry_run=False, export_tracks=None, export_masks=None)

        def progress(done: int, total: int) -> None:
            self.render_state["done"] = done

        def run() -> None:
            try:
                summary = protect_video(self.analysis.video, self.output, options, detector=self.detector,
                                        protector=self.protector, progress=progress)
                self.render_state.update(state="done", done=summary.frames, seconds=round(summary.seconds, 2))
            except Exception as exc:  # noqa: BLE001 - shown on the page
                self.render_state.update(state="failed", error=str(exc))

        threading.Thread(target=run, daemon=True).start()

    def media(self, path: str) -> Path:
        """A file under the video's folder; anything else is refused."""
        if "\x00" in path or path.startswith(("/", "\\")) or ".." in Path(path).parts:
            raise PermissionError(path)
        target = (self.folder / path).resolve()
        if not target.is_relative_to(self.folder) or not target.is_file():
            raise PermissionError(path)
        return target

    # --- routes -----------------------------------------------------------------------------

    def _routes(self) -> bottle.Bottle:
        app = bottle.Bottle()
        server = self

        def allowed() -> bool:
            sent = bottle.request.get_header(TOKEN_HEADER)
            if sent is None and bottle.request.method == "GET":
                sent = bottle.request.query.get("token")
            return sent is not None and hmac.compare_digest(sent.encode(), server.token.encode())

        @app.hook("before_request")
        def guard() -> None:
            if not allowed():
                raise bottle.HTTPError(403, "a valid token is needed")

        def body() -> Any:
            try:
                return json.loads(bottle.request.body.read() or b"null")
            except json.JSONDecodeError:
                raise bottle.HTTPError(400, "the body is not JSON") from None

        def answer(fn, *args):
            try:
                return fn(*args)
            except (InputError, ValueError) as exc:
                bottle.response.status = 400
                return {"error": str(exc)}

        @app.get("/")
        def index():
            html = (STATIC / "index.html").read_text()
            bottle.response.set_header("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:; "
                                       "media-src 'self'; frame-ancestors 'none'")
            bottle.response.set_header("Referrer-Policy", "no-referrer")
            return html.replace("{{token}}", server.token)

        @app.get("/static/<name>")
        def static(name: str):
            if name not in {p.name for p in STATIC.iterdir()}:
                raise bottle.HTTPError(404)
            return bottle.static_file(name, root=str(STATIC))

        @app.get("/api/state")
        def state():
            return server.state()

        @app.get("/api/frame/<index:int>")
        def frame(index: int):
            bottle.response.content_type = "image/jpeg"
            try:
                return server.analysis.frame_path(index).read_bytes()
            except InputError as exc:
                raise bottle.HTTPError(404, str(exc)) from None

        @app.get("/api/preview/<index:int>")
        def preview(index: int):
            bottle.response.content_type = "image/jpeg"
            try:
                return server.preview(index)
            except InputError as exc:
                raise bottle.HTTPError(404, str(exc)) from None

        @app.get("/api/boxes/<index:int>")
        def boxes(index: int):
            return {"frame": index, "boxes": server.review.boxes(index)}

        @app.get("/api/thumb/<track:int>")
        def thumb(track: int):
            bottle.response.content_type = "image/jpeg"
            try:
                return thumbnail(server.analysis, server.review, track)
            except InputError as exc:
                raise bottle.HTTPError(404, str(exc)) from None

        @app.post("/api/edits")
        def edits():
            data = body()
            return answer(lambda: {"tracks": server.tracks(server.set_edits((data or {}).get("edits")))})

        @app.post("/api/follow")
        def drawn():
            data = body() or {}
            return answer(lambda: server.follow(int(data.get("frame", -1)), list(data.get("box", []))))

        @app.post("/api/render")
        def render():
            return answer(lambda: (server.render(), server.render_state)[1])

        @app.get("/api/render")
        def render_state():
            return server.render_state

        @app.post("/api/stop")
        def stop():
            server.stop(after_s=0.3)
            return {"stopped": True}

        @app.get("/media/<path:path>")
        def media(path: str):
            try:
                target = server.media(path)
            except PermissionError:
                raise bottle.HTTPError(403, "only files under the video's folder are served") from None
            mime = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            return bottle.static_file(target.name, root=str(target.parent), mimetype=mime)

        return app
