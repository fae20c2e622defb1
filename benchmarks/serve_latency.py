"""Decode latency of `vaekit serve`: p50/p95 over 1,000 POST /api/decode requests from a local client.

Starts the explorer for a run on 127.0.0.1 (a free port) in this process and times requests from an httpx client
over a real socket, so the figure includes HTTP, JSON, validation, the decoder and PNG encoding.

    python benchmarks/serve_latency.py [--run runs/demo] [--requests 1000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time

import httpx
import torch
import uvicorn

from vaekit import DataConfig, TrainConfig, load_run, train
from vaekit.data import load_dataset
from vaekit.web.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="a trained run (default: train one for 1 epoch)")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    if args.run:
        run = load_run(args.run)
    else:
        with tempfile.TemporaryDirectory() as out:
            run = train(TrainConfig(data=DataConfig(dataset="fashion-mnist"), epochs=1), out)
    app = create_app(run.model, load_dataset(run.config.data).test, str(args.run or "a 1-epoch run"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    g = torch.Generator().manual_seed(0)
    bodies = [{"z": torch.randn(run.model.latent_dim, generator=g).tolist()} for _ in range(args.requests)]
    timings = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for body in bodies[:20]:  # warm-up
            client.post("/api/decode", json=body)
        for body in bodies:
            start = time.perf_counter()
            response = client.post("/api/decode", json=body)
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200
    server.should_exit = True
    timings.sort()
    p95 = timings[int(0.95 * len(timings)) - 1]
    print(f"{args.requests} POST /api/decode to 127.0.0.1 ({run.config.model.network} decoder, "
          f"{run.model.latent_dim}-d latent, {'x'.join(map(str, run.model.input_shape))} PNG)")  # fmt: skip
    print(f"  p50 {statistics.median(timings):.2f} ms   p95 {p95:.2f} ms   max {timings[-1]:.2f} ms")


if __name__ == "__main__":
    main()
