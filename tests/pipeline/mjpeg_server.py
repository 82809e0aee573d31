"""A real network camera for tests: an HTTP server streaming JPEG frames as multipart/x-mixed-replace (MJPEG,
the format of most IP cameras' HTTP streams), which OpenCV's FFmpeg backend reads like any live URL.

It can misbehave on purpose: ``stall_after`` frames into the first connection it stops sending but keeps the
connection open (a camera that hangs), and until :meth:`start` is called nothing listens (a camera that is off).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOUNDARY = "frame"


class MjpegCamera:
    def __init__(self, jpegs: list[bytes], port: int, fps: float = 25.0, stall_after: int | None = None) -> None:
        self.jpegs = jpegs
        self.port = port
        self.fps = fps
        self.stall_after = stall_after
        self.connections = 0
        self.closing = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> MjpegCamera:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                camera.connections += 1
                stall = camera.stall_after if camera.connections == 1 else None
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
                self.end_headers()
                sent = 0
                try:
                    while not camera.closing.is_set():
                        if stall is not None and sent >= stall:
                            camera.closing.wait(0.1)  # hung camera: connection open, nothing sent
                            continue
                        jpeg = camera.jpegs[sent % len(camera.jpegs)]
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         f"{len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                        sent += 1
                        time.sleep(1.0 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up (reconnecting, or done)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.closing.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
