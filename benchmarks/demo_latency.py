"""Latency of one slider move in `tunify demo`: a 512×512 image, the shipped zoo model, the
HTTP round trip on loopback (JSON in, PNG data URL out) and the model's own time.

    python benchmarks/demo_latency.py [MODEL] [--size 512] [--moves 10]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import urllib.request

import torch
from PIL import Image

from tunify.demo import serve
from tunify.publishing import from_pretrained, from_zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="nafnet-grain-s25")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--moves", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pathlib import Path

    tm = from_pretrained(args.model) if Path(args.model).is_dir() else from_zoo(args.model)
    server, _ = serve(tm, port=0, background=True)
    url = "http://%s:%d" % server.server_address[:2]
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize((args.size, args.size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")

    def post(path, body, kind):
        req = urllib.request.Request(url + path, data=body, headers={"Content-Type": kind})
        with urllib.request.urlopen(req) as res:
            return json.loads(res.read())

    key = post("/api/upload", buf.getvalue(), "application/octet-stream")["id"]
    post("/api/run", json.dumps({"id": key, "lam": [0.5, 0.5]}).encode(), "application/json")  # warm-up
    model_ms, trip_ms = [], []
    for i in range(args.moves):
        t = i / max(1, args.moves - 1)
        start = time.perf_counter()
        out = post("/api/run", json.dumps({"id": key, "lam": [1 - t, t]}).encode(), "application/json")
        trip_ms.append((time.perf_counter() - start) * 1000)
        model_ms.append(out["ms"])
    server.shutdown()
    print(f"{args.model}, {args.size}x{args.size}, {torch.get_num_threads()} threads, {args.moves} slider moves:")
    print(f"  model forward   median {statistics.median(model_ms):.0f} ms, max {max(model_ms):.0f} ms")
    print(f"  HTTP round trip median {statistics.median(trip_ms):.0f} ms, max {max(trip_ms):.0f} ms "
          "(includes PNG encoding of the output)")


if __name__ == "__main__":
    main()
