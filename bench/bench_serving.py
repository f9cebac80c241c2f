"""Serving: `crucible serve` (a subprocess, OpenAI API over HTTP on 127.0.0.1, dynamic batching) at 1, 8 and 32
concurrent clients vs the same model called directly through transformers `generate`, one request at a time in
this process, in the same run.

Same tiny Llama checkpoint (vocab 4096, hidden 256, 4 layers, as bench_inference.py), registered in a temporary
lake and served from the registry. Greedy completions of raw prompts (no chat format), up to --max-new-tokens
each; the server's texts are checked against the direct ones before anything is timed. Rounds alternate the
contenders so a burst of load from other processes hits all alike; each contender's best round counts.
Prints latency p50/p99, throughput, the ratios the issue aims at (single request within 10% of the direct
call; 8 clients at least 2x direct sequential throughput), CPU seconds and the load average.

    python bench/bench_serving.py [--requests 16] [--max-new-tokens 64] [--rounds 3] [--threads 1] [--no-events]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from crucible.train.config import TinyModelSpec
from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer

SPEC = TinyModelSpec(vocab_size=4096, hidden_size=256, num_layers=4, num_heads=4, max_position_embeddings=1024)
SENTENCES = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Weng earns 12 dollars an hour for babysitting; yesterday she did 50 minutes of babysitting.",
    "Betty is saving money for a new wallet which costs 100 dollars and she has only half of it.",
    "James writes a 3-page letter to 2 different friends twice a week; how many pages a year?",
    "Mark has a garden with flowers: he planted plants of three different colors in it.",
    "Albert is wondering how much pizza he can eat in one day: he buys 2 large pizzas and 2 small ones.",
    "Ken created a care package to send to his brother, who was away at boarding school.",
    "Alexis is applying for a new job and bought a new set of business clothes to wear to the interview.",
]


def build_checkpoint(folder: Path) -> None:
    tokenizer = train_bpe_tokenizer(SENTENCES * 40, vocab_size=SPEC.vocab_size)
    model = build_tiny_causal_lm(SPEC, tokenizer)
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)  # greedy choices away from near-ties, as in bench_inference.py
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def prompts(count: int) -> list[str]:
    return [f"Question {n}: {SENTENCES[n % len(SENTENCES)]}\nAnswer:" for n in range(count)]


def start_server(lake: Path, home: Path, max_batch_size: int, max_wait_ms: float, events: bool,
                 threads: int) -> tuple[subprocess.Popen, str]:
    command = [str(Path(sys.executable).with_name("crucible")), "serve", "--model", "bench", "--version", "1",
               "--port", "0", "--root", str(lake), "--max-batch-size", str(max_batch_size),
               "--max-wait-ms", str(max_wait_ms)] + ([] if events else ["--no-events"])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "CRUCIBLE_HOME": str(home), "HF_HUB_OFFLINE": "1",
                                    "OMP_NUM_THREADS": str(threads)})
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"crucible serve did not start: {line!r}")
    url = match.group(1)
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} was not ready after 120 s")
        time.sleep(0.1)
    return process, url


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct(model, tokenizer, texts: list[str], max_new_tokens: int) -> tuple[list[str], list[float], float]:
    """(texts, latencies in s, wall s): HF generate one request at a time, tokenizing and decoding included."""
    outputs, latencies = [], []
    started = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            begin = time.perf_counter()
            ids = torch.tensor([tokenizer.encode(text)])
            output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id)
            outputs.append(tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True))
            latencies.append(time.perf_counter() - begin)
    return outputs, latencies, time.perf_counter() - started


def served(url: str, texts: list[str], clients: int, max_new_tokens: int) -> tuple[list[str], list[float], float]:
    """(texts, latencies in s, wall s): ``clients`` closed-loop clients share ``texts`` (keep-alive connections)."""
    outputs: list[str] = [""] * len(texts)
    latencies: list[float] = []
    lock, cursor = threading.Lock(), iter(range(len(texts)))
    ready = threading.Barrier(clients + 1)

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            ready.wait()
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                begin = time.perf_counter()
                answer = http.post("/v1/completions", json={"model": "bench", "prompt": texts[index],
                                                            "max_tokens": max_new_tokens, "temperature": 0})
                answer.raise_for_status()
                elapsed = time.perf_counter() - begin
                outputs[index] = answer.json()["choices"][0]["text"]
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return outputs, latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16, help="requests per single-client and direct round")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per contender; the best one counts")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--no-events", action="store_true", help="serve without recording inference events")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on both sides (OMP_NUM_THREADS for the server); more than one collapses "
                             "when other processes take the cores")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from crucible.lake import DeltaLake
    from crucible.registry.access import Principal
    from crucible.registry.registry import Registry

    hf_logging.set_verbosity_error()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoint"
        build_checkpoint(folder)
        Registry(DeltaLake(Path(tmp) / "lake"), Principal("bench", frozenset({"admin"}))).register(
            "bench", {"checkpoint": folder}, training_run_id="bench", dataset="bench", dataset_version=1)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        process, url = start_server(Path(tmp) / "lake", Path(tmp) / "home", 32, args.max_wait_ms,
                                    not args.no_events, args.threads)
        try:
            run(args, model, tokenizer, url, process.pid)
        finally:
            process.terminate()
            process.wait(60)
    print(f"\nload average at end {os.getloadavg()}")


def run(args: argparse.Namespace, model, tokenizer, url: str, server_pid: int) -> None:
    texts = prompts(args.requests)
    loads = {"direct": (1, texts), "1 client": (1, texts), "8 clients": (8, prompts(args.requests * 4)),
             "32 clients": (32, prompts(args.requests * 8))}
    # Warm up both sides, and check they agree before timing anything.
    reference, _, _ = direct(model, tokenizer, texts, args.max_new_tokens)
    answers, _, _ = served(url, texts, 8, args.max_new_tokens)
    same = sum(a == b for a, b in zip(answers, reference, strict=True))
    print(f"\nagreement: served text == direct text for {same}/{len(texts)} prompts (greedy, batched by the server)")

    best: dict[str, tuple[list[float], float, float, float]] = {}  # latencies, wall, server CPU-s, own CPU-s
    for _ in range(args.rounds):
        for name, (clients, work) in loads.items():
            server_cpu, own_cpu = cpu_seconds(server_pid), time.process_time()
            if name == "direct":
                _, latencies, wall = direct(model, tokenizer, work, args.max_new_tokens)
            else:
                _, latencies, wall = served(url, work, clients, args.max_new_tokens)
            server_cpu, own_cpu = cpu_seconds(server_pid) - server_cpu, time.process_time() - own_cpu
            if name not in best or wall / len(work) < best[name][1] / len(best[name][0]):
                best[name] = (latencies, wall, server_cpu, own_cpu)

    print(f"\n== {args.max_new_tokens} new tokens per request, best of {args.rounds} rounds "
          f"(load average {os.getloadavg()[0]:.2f})")
    print(f"   {'':12} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'CPU-s (server+client)':>22}")
    for name, (latencies, wall, server_cpu, own_cpu) in best.items():
        cpu = f"{server_cpu:.2f}+{own_cpu:.2f}" if name != "direct" else f"{own_cpu:.2f}"
        print(f"   {name:12} {len(latencies):8d} {percentile(latencies, 50) * 1000:8.1f} "
              f"{percentile(latencies, 99) * 1000:8.1f} {len(latencies) / wall:7.2f} {cpu:>22}")
    direct_p50 = percentile(best["direct"][0], 50)
    direct_rate = len(best["direct"][0]) / best["direct"][1]
    single = percentile(best["1 client"][0], 50) / direct_p50
    eight = len(best["8 clients"][0]) / best["8 clients"][1] / direct_rate
    thirty_two = len(best["32 clients"][0]) / best["32 clients"][1] / direct_rate
    print(f"\n   single request p50 latency, server / direct:        {single:5.2f}x  (aim <= 1.10: {single <= 1.10})")
    print(f"   8 clients throughput / direct sequential:           {eight:5.2f}x  (aim >= 2: {eight >= 2})")
    print(f"   32 clients throughput / direct sequential:          {thirty_two:5.2f}x")


if __name__ == "__main__":
    main()
