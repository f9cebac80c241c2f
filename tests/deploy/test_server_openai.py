"""The real ``openai`` Python client against the server on 127.0.0.1: chat, streaming, completions, models,
seeded sampling and its error classes; and ``crucible serve`` as a subprocess serving a registered version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from crucible.deploy.server import EVENT_HEADER, ModelServer
from crucible.inference import GenerationRequest, InferenceEngine
from crucible.lake import DeltaLake
from schemas import INFERENCE_EVENTS
from tests.deploy.tiny_model import make_tiny_checkpoint, register_tiny

USER = [{"role": "user", "content": "Question: how many clips did Natalia sell?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="module")
def engine(checkpoint):
    return InferenceEngine.from_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def server(engine):
    server = ModelServer(engine, model_id="tiny", max_batch_size=8, max_wait_ms=20).start()
    server.wait_ready(30)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_chat_completion_is_the_engines_answer_with_usage_and_event_id(client, engine):
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=USER, max_tokens=16,
                                                           temperature=0)
    answer = raw.parse()
    [direct] = engine.generate([GenerationRequest(messages=USER, max_new_tokens=16)])
    assert answer.choices[0].message.content == direct.text
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == direct.finish_reason
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (direct.prompt_tokens,
                                                                            direct.completion_tokens)
    assert answer.usage.total_tokens == direct.prompt_tokens + direct.completion_tokens
    assert answer.id == f"chatcmpl-{raw.headers[EVENT_HEADER]}" and answer.model == "tiny"


def test_streaming_with_the_openai_client_gives_the_same_text_and_usage(client):
    whole = client.chat.completions.create(model="tiny", messages=USER, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=USER, max_tokens=24, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == whole.choices[0].message.content and len(pieces) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert len({c.id for c in chunks}) == 1


def test_completions_take_a_prompt_or_a_list_of_prompts(client, engine):
    prompts = ["the cat", "Natalia sold 48", "x"]
    answer = client.completions.create(model="tiny", prompt=prompts, max_tokens=8, temperature=0)
    direct = engine.generate([GenerationRequest(prompt=p, max_new_tokens=8) for p in prompts])
    assert [c.text for c in sorted(answer.choices, key=lambda c: c.index)] == [g.text for g in direct]
    assert answer.usage.completion_tokens == sum(g.completion_tokens for g in direct)
    one = client.completions.create(model="tiny", prompt="the cat", max_tokens=8, temperature=0, echo=True)
    assert one.choices[0].text == "the cat" + direct[0].text
    streamed = client.completions.create(model="tiny", prompt="the cat", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == direct[0].text


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_seeded_sampling_is_reproducible_whoever_shares_the_batch(client):
    def sample(seed: int) -> str:
        return client.chat.completions.create(model="tiny", messages=USER, max_tokens=16, temperature=1.2,
                                              top_p=0.95, seed=seed).choices[0].message.content

    alone = {seed: sample(seed) for seed in (1, 2, 3)}
    assert len(set(alone.values())) == 3
    with ThreadPoolExecutor(6) as pool:
        crowded = list(pool.map(sample, [1, 2, 3, 1, 2, 3]))
    assert crowded == [alone[s] for s in (1, 2, 3, 1, 2, 3)]


def test_openai_client_raises_its_error_classes(client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=USER)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="tiny", messages=USER, max_tokens=10_000)
    assert raised.value.code == "context_length_exceeded"
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="tiny", messages=USER, temperature="warm")
    assert client.chat.completions.create(model="tiny", messages=USER, max_tokens=4).choices  # still serving


@pytest.mark.slow
def test_crucible_serve_subprocess_serves_the_registered_version_and_flushes_events_on_sigterm(tmp_path, checkpoint):
    lake = DeltaLake(tmp_path / "lake")
    version = register_tiny(lake, checkpoint)
    command = [str(Path(sys.executable).with_name("crucible")), "serve", "tiny@production", "--port", "0", "--root", str(tmp_path / "lake"), "--deployment", "tiny-prod"]
    environment = {**os.environ, "CRUCIBLE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, process.stderr.read() if process.poll() is not None else line
        url = line.rsplit(" ", 1)[1].strip()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = client.chat.completions.create(model="tiny", messages=USER, max_tokens=8, temperature=0)
                break
            except openai.APIStatusError as error:  # 503 until the weights are loaded
                assert error.status_code == 503 and time.monotonic() < deadline
                time.sleep(0.2)
        ids = [answer.id.removeprefix("chatcmpl-")]
        for stream in (False, True):
            raw = client.chat.completions.with_raw_response.create(model="tiny", messages=USER, max_tokens=8,
                                                                   stream=stream)
            ids.append(raw.headers[EVENT_HEADER])
            if stream:
                list(raw.parse())
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    stored = lake.read(INFERENCE_EVENTS).set_index("event_id")
    assert sorted(stored.index) == sorted(ids)
    assert set(stored["model_version"]) == {version.version} and set(stored["deployment"]) == {"tiny-prod"}


@pytest.mark.parametrize(("arguments", "message"), [
    (["tiny/v1", "--model", "tiny"], "drop --model"),
    (["--version", "1"], "name the model"),
    (["--model", "tiny", "--version", "1", "--alias", "a"], "at most one of"),
    (["--model", "tiny", "--inject-fault", "explode"], "expected 'error'"),
    (["--model", "nothing-registered"], "no registered versions"),
])
def test_crucible_serve_refuses_unclear_arguments_before_serving(tmp_path, arguments, message):
    from click.testing import CliRunner

    from crucible.cli import main

    (tmp_path / "lake").mkdir()
    result = CliRunner().invoke(main, ["serve", *arguments, "--root", str(tmp_path / "lake")])
    assert result.exit_code != 0 and message in result.output, result.output
