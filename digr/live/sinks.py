"""Where live frames go: an MP4 file, a web page on a local port, or a window.

Every sink has ``push(frame, stats)`` (frame uint8 ``[H, W, 3]``; ``stats`` a dict of HUD numbers) and ``close()``.
A sink never makes the driving loop wait for a viewer: the web view keeps only the newest frame and each client
takes the newest one when it is ready (frames are dropped, ticks are not).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from digr.checkpoint import atomic_path

__all__ = ["Mp4Sink", "WebSink", "WindowSink"]


class Mp4Sink:
    """Frames to an H.264 MP4 with imageio's ffmpeg writer (the ``imageio-ffmpeg`` wheel bundles ffmpeg). Written to a
    temporary file and renamed into place on :meth:`close`, so an interrupted drive leaves no half-written video.

    :param path: the ``.mp4`` to write. :param fps: frames per second of the video.
    :raises DiskFullError, NotWritableError: on close, as :func:`digr.checkpoint.atomic_path`.
    """

    def __init__(self, path: str | Path, fps: float = 25.0):
        self.path, self.fps, self.frames = Path(path), fps, 0
        self._ctx = atomic_path(self.path, suffix=".tmp.mp4")
        self._tmp = self._ctx.__enter__()
        self._writer = None

    def push(self, frame: np.ndarray, stats: dict | None = None) -> None:
        """Append one frame (uint8 ``[H, W, 3]``; odd sizes are padded by one black row/column for H.264)."""
        import imageio.v2 as imageio

        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
        if self._writer is None:
            self._writer = imageio.get_writer(self._tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                                              macro_block_size=1, pixelformat="yuv420p")  # fmt: skip
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and move it into place (nothing is written when no frame was pushed)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._ctx.__exit__(None, None, None)
        else:  # leaving the context with an error removes the temporary file and writes nothing
            no_frames = RuntimeError("no frames were pushed")
            self._ctx.__exit__(RuntimeError, no_frames, None)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>DIGR live saliency</title>
<style>body{background:#111;color:#eee;font-family:sans-serif;margin:16px}img{image-rendering:pixelated;max-width:100%}
#stats{font-family:monospace;margin-top:8px}</style></head>
<body><h3>DIGR live saliency: __TITLE__</h3><img id="view" src="/stream" alt="live frames">
<div id="stats">waiting for frames</div>
<script>
async function poll(){try{const r=await fetch('/stats');const s=await r.json();
document.getElementById('stats').textContent=Object.entries(s).map(([k,v])=>k+': '+v).join('   ');}catch(e){}
setTimeout(poll,500);}poll();
</script></body></html>
"""


class WebSink:
    """A live web view on ``http://host:port/``: the page shows an MJPEG stream (``/stream``, multipart JPEG) and the
    HUD numbers (``/stats``, JSON, polled twice a second); ``/frame.jpg`` is the newest frame. Served by a
    ``ThreadingHTTPServer`` in daemon threads; :meth:`push` only swaps the newest frame in.

    :param port: TCP port (0 picks a free one; see :attr:`port`). :param host: interface, 127.0.0.1 by default (use
        0.0.0.0 deliberately to serve other machines, e.g. from a Docker container). :param title: shown on the page.
    :param quality: JPEG quality 1–100.
    :raises OSError: the port is taken.
    """

    def __init__(self, port: int = 8000, host: str = "127.0.0.1", title: str = "", quality: int = 85):
        self.quality, self._jpeg, self._stats, self._seq = quality, None, {}, 0
        self._cond = threading.Condition()
        self._closed = False
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", _PAGE.replace("__TITLE__", title).encode())
                elif self.path == "/stats":
                    with sink._cond:
                        body = json.dumps(sink._stats).encode()
                    self._send(200, "application/json", body)
                elif self.path == "/frame.jpg":
                    jpeg = sink.wait_frame(0, timeout=10.0)[1]
                    self._send(200 if jpeg else 503, "image/jpeg", jpeg or b"")
                elif self.path == "/stream":
                    self.send_response(200)
                    self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                    self.send_header("Cache-Control", "no-cache")
                    self.end_headers()
                    seq = 0
                    try:
                        while not sink._closed:
                            seq, jpeg = sink.wait_frame(seq, timeout=1.0)
                            if jpeg is None:
                                continue
                            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: ")
                            self.wfile.write(f"{len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def wait_frame(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """The newest JPEG once its sequence number exceeds ``after`` (or None after ``timeout`` seconds)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._closed, timeout=timeout)
            return (self._seq, self._jpeg) if self._seq > after else (after, None)

    def push(self, frame: np.ndarray, stats: dict | None = None) -> None:
        """Make ``frame`` (uint8 ``[H, W, 3]`` RGB) the newest one; JPEG-encoded here, once for every client."""
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        with self._cond:
            self._jpeg, self._seq = jpeg.tobytes(), self._seq + 1
            self._stats = dict(stats or {})
            self._cond.notify_all()

    def close(self) -> None:
        """Stop serving (open streams end within a second)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()


class WindowSink:
    """A desktop window through pygame (pygame-ce, from gymnasium's box2d extra). Needs a display; closing the window
    ends the drive (:attr:`closed`).

    :param title: the window title. :raises RuntimeError: no display (use ``--video`` or ``--serve`` instead).
    """

    def __init__(self, title: str = "DIGR live saliency"):
        import pygame

        self._pg = pygame
        try:
            pygame.display.init()
        except pygame.error as e:
            raise RuntimeError(f"no display for a window ({e}); use --video or --serve instead") from e
        self.title, self.screen, self.closed = title, None, False

    def push(self, frame: np.ndarray, stats: dict | None = None) -> None:
        """Show ``frame`` (uint8 ``[H, W, 3]``); handles the window's events."""
        pg = self._pg
        if self.screen is None:
            self.screen = pg.display.set_mode((frame.shape[1], frame.shape[0]))
            pg.display.set_caption(self.title)
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self.closed = True
        pg.surfarray.blit_array(self.screen, frame.transpose(1, 0, 2))
        pg.display.flip()

    def close(self) -> None:
        """Close the window."""
        self._pg.display.quit()
