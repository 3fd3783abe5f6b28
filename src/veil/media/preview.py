"""A local preview of a live run: the protected frames as MJPEG over HTTP on 127.0.0.1, which any
browser plays (a server has no window to show them in).

``veil protect SOURCE -o SINK --preview 8090`` serves http://127.0.0.1:8090/ while it runs. Only the
loopback interface listens: the preview shows what is sent, and is no way in for other machines.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

__all__ = ["Preview"]

_BOUNDARY = b"veilframe"


class Preview:
    """Serves the latest frame handed to it (`__call__`) as an MJPEG stream; `close` stops it."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", quality: int = 80) -> None:
        self._jpeg: bytes | None = None
        self._new = threading.Condition()
        self._quality = quality
        self._closed = False
        preview = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # no request log on the run's console
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path not in ("/", "/stream.mjpg"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY.decode()}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                try:
                    while (jpeg := preview._wait()) is not None:
                        self.wfile.write(b"--" + _BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __call__(self, image: np.ndarray) -> None:
        """Show `image` ((H, W, 3) uint8 RGB) to the viewers."""
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self._quality])
        if ok:
            with self._new:
                self._jpeg = data.tobytes()
                self._new.notify_all()

    def _wait(self) -> bytes | None:
        """The next frame to send (None: the preview closed); at least once a second."""
        with self._new:
            self._new.wait(timeout=1.0)
            while self._jpeg is None and not self._closed:
                self._new.wait(timeout=1.0)
            return None if self._closed else self._jpeg

    def close(self) -> None:
        with self._new:
            self._closed = True
            self._new.notify_all()
        self._server.shutdown()
        self._server.server_close()
