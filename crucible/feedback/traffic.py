"""Simulated users as a traffic generator: chat requests sent over HTTP to the inference server.

The demo's day of traffic goes through the same path as real users: the OpenAI-compatible server
(``crucible.deploy.server``) batches the concurrent requests on the engine and answers them; the
generator records what each client saw (text, token usage, latency to the last byte).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from crucible.inference import Generation, InferenceEngine


class TrafficError(RuntimeError):
    """The server refused or failed a simulated request; the message names the request."""


def served_chat(engine: InferenceEngine, prompts: Sequence[str], max_new_tokens: int, *, model_id: str,
                clients: int = 8, timeout_s: float = 300.0) -> list[Generation | None]:
    """Greedy answers to ``prompts`` from a server started on 127.0.0.1 around ``engine``, asked by
    ``clients`` concurrent users; ``result[i]`` answers ``prompts[i]``, None when the server refused it
    as too long for the model's context (as it would refuse a real user). The server records no events:
    the caller ingests what the clients saw, stamped with the simulated day."""
    import requests

    from crucible.deploy.server import ModelServer

    server = ModelServer(engine, model_id=model_id, max_batch_size=max(1, clients)).start()
    try:
        server.wait_ready(timeout_s)
        session = requests.Session()

        def ask(position: int) -> Generation | None:
            started = time.perf_counter()
            response = session.post(f"{server.url}/v1/chat/completions", timeout=timeout_s, json={
                "model": model_id, "messages": [{"role": "user", "content": prompts[position]}],
                "max_tokens": max_new_tokens, "temperature": 0})
            latency_ms = (time.perf_counter() - started) * 1000
            if response.status_code == 400 and "context_length_exceeded" in response.text:
                return None
            if response.status_code != 200:
                raise TrafficError(f"simulated request {position} got HTTP {response.status_code}: "
                                   f"{response.text[:300]}")
            body = response.json()
            choice, usage = body["choices"][0], body.get("usage") or {}
            return Generation((choice["message"]["content"] or "").strip(), int(usage.get("prompt_tokens", 0)),
                              int(usage.get("completion_tokens", 0)), choice.get("finish_reason") or "stop",
                              latency_ms)

        with ThreadPoolExecutor(max_workers=max(1, clients)) as pool:
            return list(pool.map(ask, range(len(prompts))))
    finally:
        server.stop()
