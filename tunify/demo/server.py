"""``tunify demo``: a local page where a person uploads an image and moves λ.

A small standard-library HTTP server (no web framework to install) serving one static page
and a JSON API:

    GET  /              the page
    GET  /api/info      the model: name, objectives and what each λ corner means, λ space
    POST /api/upload    body: the image file's bytes  -> {"id", "width", "height"}
    POST /api/run       {"id", "lam": [...]}          -> {"image": PNG data URL, "ms": model time}

The input is decoded once per upload and kept (a few at most), so each slider move sends only
λ and runs one forward pass. Bad input (a file that is no image, an image over the size limit,
λ off its space) gets a 400 with a message for people; never a stack trace. It listens on
loopback unless told otherwise.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from ..surgery import TunableModel

__all__ = ["DemoApp", "serve", "MAX_PIXELS", "MAX_BYTES", "MAX_OUTPUT_PIXELS", "TARGET_SECONDS"]

MAX_PIXELS = 2048 * 2048          # what an upload may hold at all
MAX_BYTES = 25 * 1024 * 1024
MAX_OUTPUT_PIXELS = 1024 * 1024   # what one λ move may produce: a ×4 model runs on at most 256×256
TARGET_SECONDS = 3.0              # and a λ move should take about this long at most on this machine


class BadInput(ValueError):
    """A request the page should explain to the person (HTTP 400)."""


def _decode(data: bytes) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInput("the upload is empty: choose an image file (PNG, JPEG, ...)")
    if len(data) > MAX_BYTES:
        raise BadInput(f"the file is {len(data) / 2**20:.1f} MB; the demo takes files up to {MAX_BYTES // 2**20} MB")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise BadInput(f"the image is {w}×{h} pixels; the demo takes at most {MAX_PIXELS:,} pixels "
                           "(2048×2048): resize it first")
        img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise BadInput(f"this file is not an image the demo can read ({type(exc).__name__}); "
                       "upload a PNG, JPEG, BMP, TIFF or WebP image") from None
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)


def _encode_png(image: torch.Tensor) -> str:
    from PIL import Image

    arr = (image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class DemoApp:
    """The demo's logic, separate from HTTP so it is testable and reusable."""

    def __init__(self, tm: TunableModel, name: str = "tunable model", keep: int = 4, max_input_pixels: Optional[int] = None,
                 forward: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None):
        self.tm, self.name, self.keep = tm.eval(), name, keep
        # (image (1, 3, h, w), λ (p,)) -> output; a model file's size rules pad, crop and tile here
        self.forward = forward or (lambda x, lam: self.tm(x, lam=lam))
        self.inputs: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self.lock = threading.Lock()  # one forward at a time: the CPU is the bottleneck anyway
        self.scale, self.max_input_pixels = self._probe(max_input_pixels)

    def _probe(self, limit: Optional[int]) -> Tuple[int, int]:
        """(output/input scale, the largest input in pixels): a super-resolution model makes
        scale² more pixels per input pixel, so its inputs are capped by MAX_OUTPUT_PIXELS and
        by the time a 64×64 forward takes here (each λ move should stay near TARGET_SECONDS)."""
        x = torch.rand(1, 3, 64, 64)
        lam = self.tm.validate_lam([1.0 / self.tm.p] * self.tm.p)  # the centre: valid on the simplex and in the box
        with torch.no_grad():
            self.forward(x[..., :16, :16], lam)  # warm-up: first calls pay for allocation
            start = time.perf_counter()
            out = self.forward(x, lam)
            per_pixel = (time.perf_counter() - start) / x[0, 0].numel()
        scale = max(1, round(out.shape[-1] / x.shape[-1]))
        if limit is None:
            limit = min(MAX_PIXELS, MAX_OUTPUT_PIXELS // scale ** 2, max(64 * 64, int(TARGET_SECONDS / per_pixel)))
        return scale, limit

    def _fit(self, image: torch.Tensor) -> Tuple[torch.Tensor, Optional[str]]:
        """The image, or its centre crop when it holds more than max_input_pixels (the crop
        keeps native pixels, so a super-resolution result shows real detail)."""
        _, h, w = image.shape
        if h * w <= self.max_input_pixels:
            return image, None
        side = self.max_input_pixels ** 0.5
        ratio = (w / h) ** 0.5
        cw, ch = min(w, int(side * ratio)), min(h, int(side / ratio))
        while cw * ch > self.max_input_pixels:
            cw, ch = cw - 1, ch - 1
        y, x = (h - ch) // 2, (w - cw) // 2
        note = (f"showing the centre {cw}×{ch} of your {w}×{h} image: the model makes {self.scale}× larger "
                f"images and each λ move should take a few seconds" if self.scale > 1 else
                f"showing the centre {cw}×{ch} of your {w}×{h} image, so each λ move takes a few seconds")
        return image[:, y : y + ch, x : x + cw].contiguous(), note

    def info(self) -> Dict[str, Any]:
        return {"name": self.name, "lam_space": self.tm.lam_space.kind, "p": self.tm.p, "scale": self.scale,
                "max_input_pixels": self.max_input_pixels,
                "objectives": self.tm.config.objective_list()}

    def upload(self, data: bytes) -> Dict[str, Any]:
        image, note = self._fit(_decode(data))
        key = uuid.uuid4().hex
        with self.lock:
            self.inputs[key] = image
            while len(self.inputs) > self.keep:
                self.inputs.popitem(last=False)
        return {"id": key, "width": image.shape[2], "height": image.shape[1], "input": _encode_png(image),
                "note": note, "scale": self.scale}

    def run(self, key: str, lam: Any) -> Dict[str, Any]:
        image = self.inputs.get(key)
        if image is None:
            raise BadInput("that upload is no longer held by the server: upload the image again")
        try:
            lam_t = self.tm.validate_lam(lam)
        except ValueError as exc:
            raise BadInput(f"λ is not valid: {exc}") from None
        if lam_t.dim() != 1:
            raise BadInput("send one λ for the image, a list of numbers")
        with self.lock, torch.no_grad():
            start = time.perf_counter()
            out = self.forward(image[None], lam_t)[0]
            ms = (time.perf_counter() - start) * 1000
        return {"image": _encode_png(out), "ms": round(ms, 1), "lam": [round(float(v), 4) for v in lam_t]}


def _handler(app: DemoApp) -> type:
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        server_version = "tunify-demo"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the page shows what matters
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Dict[str, Any]) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                self._send(200, page.encode(), "text/html; charset=utf-8")
            elif self.path == "/api/info":
                self._json(200, app.info())
            else:
                self._json(404, {"error": f"no such page: {self.path}"})

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BYTES:
                    raise BadInput(f"the upload is {length / 2**20:.1f} MB; the demo takes files up to "
                                   f"{MAX_BYTES // 2**20} MB")
                body = self.rfile.read(length)
                if self.path == "/api/upload":
                    self._json(200, app.upload(body))
                elif self.path == "/api/run":
                    try:
                        request = json.loads(body or b"{}")
                    except json.JSONDecodeError:
                        raise BadInput("the request is not JSON: send {\"id\": ..., \"lam\": [...]}") from None
                    if not isinstance(request, dict):
                        raise BadInput("the request must be a JSON object: send {\"id\": ..., \"lam\": [...]}")
                    self._json(200, app.run(str(request.get("id", "")), request.get("lam")))
                else:
                    self._json(404, {"error": f"no such endpoint: {self.path}"})
            except BadInput as exc:
                self._json(400, {"error": str(exc)})
            except Exception as exc:  # a bug: say so plainly, keep the traceback off the page
                self._json(500, {"error": f"the server failed ({type(exc).__name__}); see its console"})
                raise

    return Handler


def _bind(host: str, port: int, handler: type, tries: int = 20) -> ThreadingHTTPServer:
    """A server on ``port``, or the next free one of the ``tries`` after it when it is taken."""
    for candidate in ([port] if port == 0 else range(port, port + tries)):
        try:
            return ThreadingHTTPServer((host, candidate), handler)
        except OSError as exc:
            if exc.errno not in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise OSError(f"cannot listen on {host}:{candidate}: {exc.strerror}") from None
    raise OSError(f"ports {port}–{port + tries - 1} on {host} are all in use: pass --port with a free one")


def serve(tm: TunableModel, name: str = "tunable model", host: str = "127.0.0.1", port: int = 7860,
          background: bool = False, forward: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
          ) -> Tuple[ThreadingHTTPServer, Optional[threading.Thread]]:
    """Start the demo server; ``port=0`` picks a free one, a port in use moves to the next
    free one (the address is ``server.server_address``). ``forward``: how to run the model
    (``tunify.archs.sizing.sized_forward(tm)`` for a model file's size rules)."""
    server = _bind(host, port, _handler(DemoApp(tm, name, forward=forward)))
    if background:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        return server, thread
    return server, None
