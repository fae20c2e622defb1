"""Decode latency of `vaekit serve`: p50/p95 and throughput of POST /api/decode, from one client and from 8 at once.

Starts the explorer for a run on 127.0.0.1 (a free port) in this process and times requests from httpx clients
over real sockets, so the figures include HTTP, JSON, validation, the model's worker pool, the decoder and PNG
encoding. The concurrent round is what the bounded pool is for: 8 clients share `--workers` model threads.

    python benchmarks/serve_latency.py [--run runs/demo] [--requests 1000] [--clients 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch
import uvicorn

from vaekit import DataConfig, TrainConfig, load_run, train
from vaekit.data.sources import load_dataset
from vaekit.web.app import create_app

Body = dict[str, list[float]]


def timed_posts(base_url: str, bodies: list[Body]) -> list[tuple[bool, float]]:
    """(answered 200, milliseconds) for each body, sent one after another over one keep-alive connection."""
    results = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for body in bodies:
            start = time.perf_counter()
            try:
                ok = client.post("/api/decode", json=body).status_code == 200
            except httpx.HTTPError:
                ok = False
            results.append((ok, (time.perf_counter() - start) * 1000))
    return results


def report(label: str, results: list[tuple[bool, float]], seconds: float) -> None:
    timings = sorted(ms for _, ms in results)
    errors = sum(not ok for ok, _ in results)
    p95 = timings[int(0.95 * len(timings)) - 1]
    print(f"  {label:<10} errors {errors}   p50 {statistics.median(timings):6.2f} ms   p95 {p95:6.2f} ms   "
          f"max {timings[-1]:7.2f} ms   {len(results) / seconds:5.0f} requests/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="a trained run (default: train one for 1 epoch)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the second round")
    parser.add_argument("--workers", type=int, default=2, help="model threads of the explorer")
    args = parser.parse_args()
    if args.run:
        run = load_run(args.run)
    else:
        with tempfile.TemporaryDirectory() as out:
            run = train(TrainConfig(data=DataConfig(dataset="fashion-mnist"), epochs=1), out)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))  # as `vaekit serve` does
    test = load_dataset(run.config.data).test
    app = create_app(run.model, test, str(args.run or "a 1-epoch run"), workers=args.workers)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base_url = f"http://127.0.0.1:{port}"
    g = torch.Generator().manual_seed(0)
    bodies = [{"z": torch.randn(run.model.latent_dim, generator=g).tolist()} for _ in range(args.requests)]
    timed_posts(base_url, bodies[:20])  # warm-up
    print(f"{args.requests} POST /api/decode to 127.0.0.1 ({run.config.model.network} decoder, "
          f"{run.model.latent_dim}-d latent, {'x'.join(map(str, run.model.input_shape))} PNG, "
          f"{args.workers} model threads × {torch.get_num_threads()} torch threads)")  # fmt: skip
    start = time.perf_counter()
    sequential = timed_posts(base_url, bodies)
    report("1 client", sequential, time.perf_counter() - start)
    start = time.perf_counter()
    shares = [bodies[i :: args.clients] for i in range(args.clients)]
    with ThreadPoolExecutor(args.clients) as clients:
        answers = clients.map(timed_posts, [base_url] * args.clients, shares)
        concurrent = [result for share in answers for result in share]
    report(f"{args.clients} clients", concurrent, time.perf_counter() - start)
    server.should_exit = True


if __name__ == "__main__":
    main()
