"""A second process sending concurrent chat requests to a url until a stop file appears, recording every
response (status, event id, which backend answered) as one JSON line each: the client side of the
rollout reliability test.

Usage: python traffic_client.py URL OUT.jsonl STOP_FILE [CLIENTS]
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit


def main() -> None:
    url, out, stop_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    clients = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    parts = urlsplit(url)
    lock = threading.Lock()
    handle = out.open("a", encoding="utf-8")

    def client(number: int) -> None:
        sent = 0
        while not stop_file.exists():
            body = json.dumps({"model": "tiny", "temperature": 0, "max_tokens": 4,
                               "messages": [{"role": "user", "content": f"client {number} request {sent}"}]})
            record = {"client": number, "request": sent, "sent_at": time.time()}
            try:
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                connection.request("POST", "/v1/chat/completions", body=body,
                                   headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                record |= {"status": response.status, "event_id": response.getheader("X-Crucible-Event-Id"),
                           "backend": response.getheader("X-Crucible-Backend"),
                           "retried_from": response.getheader("X-Crucible-Retried-From")}
                if response.status != 200:
                    record["body"] = payload.decode(errors="replace")[:300]
                connection.close()
            except Exception as error:  # noqa: BLE001 - every failure is recorded, none ends the client
                record |= {"status": None, "error": f"{type(error).__name__}: {error}"}
            record["elapsed_s"] = time.time() - record["sent_at"]
            with lock:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
            sent += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handle.close()


if __name__ == "__main__":
    main()
