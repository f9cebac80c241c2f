"""Shared pieces of the chat renderers: the message shape, the renderer interface, and the
function that turns a conversation into token ids plus per-token loss weights."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Protocol, TypedDict


class ToolCall(TypedDict, total=False):
    name: str
    arguments: dict[str, Any] | str
    id: str


class Message(TypedDict, total=False):
    role: str
    content: str
    thinking: str
    tool_calls: list[ToolCall]
    tool_call_id: str
    name: str
    trainable: bool


class Tokenizer(Protocol):
    """What renderers need from a tokenizer (Hugging Face tokenizers satisfy it)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class RenderedMessage:
    """One message as text: `prefix` (role header, never trained), `content` (what the speaker
    says) and `suffix` (the end-of-turn marker, trained with the content of an assistant turn)."""

    prefix: str
    content: str
    suffix: str


class TrainOn(str, Enum):
    """Which messages a supervised example trains on. A message's own `trainable` key overrides
    the mode for that message (except in ALL_TOKENS)."""

    LAST_ASSISTANT_MESSAGE = "last_assistant"
    ALL_ASSISTANT_MESSAGES = "all_assistant"
    ALL_MESSAGES = "all_messages"
    ALL_TOKENS = "all_tokens"
    PROMPT = "prompt"  # user and system messages only


def to_json(value: Any) -> str:
    """JSON the way Hugging Face chat templates' `tojson` filter writes it."""
    return json.dumps(value, ensure_ascii=False)


def arguments_as_dict(call: ToolCall) -> dict[str, Any]:
    arguments = call.get("arguments", {})
    return json.loads(arguments) if isinstance(arguments, str) else dict(arguments)


def arguments_as_text(call: ToolCall) -> str:
    arguments = call.get("arguments", {})
    return arguments if isinstance(arguments, str) else to_json(arguments)


def tool_function(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool definition's function part, whether given OpenAI-style or bare."""
    return tool["function"] if "function" in tool else tool


class Renderer(ABC):
    """One chat format. Subclasses say how each message renders; everything else is shared."""

    name: ClassVar[str]
    bos_text: ClassVar[str] = ""
    # Marker strings of the format; each is encoded as a single id when the tokenizer knows it.
    special_tokens: ClassVar[tuple[str, ...]] = ()
    stop_strings: ClassVar[tuple[str, ...]] = ()

    def preamble(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> str:
        """Text after BOS and before the first message (default system prompts, tool lists)."""
        return ""

    @abstractmethod
    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        """Render messages[index]; the whole conversation is given because formats look around."""

    @abstractmethod
    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        """Text that follows the rendered messages to ask the model for the next assistant turn."""

    def closing(self, messages: Sequence[Message]) -> str:
        """Text after the last message when no generation prompt follows."""
        return ""

    def stop_sequences(self) -> list[str]:
        return list(self.stop_strings)

    def stop_token_ids(self, tokenizer: Tokenizer) -> list[int]:
        ids = []
        for stop in self.stop_strings:
            encoded = tokenizer.encode(stop, add_special_tokens=False)
            if len(encoded) != 1:
                raise ValueError(
                    f"{self.name} renderer: stop sequence {stop!r} is {len(encoded)} tokens for "
                    "this tokenizer, expected one special token; stop on the string instead"
                )
            ids.append(encoded[0])
        return ids

    @abstractmethod
    def parse_assistant_text(self, text: str) -> Message:
        """Parse generated text (already cut at the first stop sequence) into a message."""

    def parse_response(
        self, response: str | Sequence[int], tokenizer: Tokenizer | None = None
    ) -> Message:
        """Turn sampled text or token ids into an assistant message, recovering thinking and
        tool calls where the format has them."""
        if not isinstance(response, str):
            if tokenizer is None:
                raise ValueError(f"{self.name} renderer: decoding token ids needs a tokenizer")
            response = tokenizer.decode(list(response), skip_special_tokens=False)
        cut = [response.find(stop) for stop in self.stop_strings if stop in response]
        if cut:
            response = response[: min(cut)]
        return self.parse_assistant_text(response)

    def render_text(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        tools: Sequence[dict] | None = None,
    ) -> str:
        validate_messages(messages)
        parts = [self.bos_text, self.preamble(messages, tools)]
        for index in range(len(messages)):
            rendered = self.render_message(messages, index, tools)
            parts += [rendered.prefix, rendered.content, rendered.suffix]
        if add_generation_prompt:
            parts.append(self.generation_prompt(messages, tools))
        else:
            parts.append(self.closing(messages))
        return "".join(parts)

    def encode(self, tokenizer: Tokenizer, text: str) -> list[int]:
        """Token ids of a text piece, with this format's markers as single ids where the
        tokenizer has them."""
        if not text:
            return []
        if not self.special_tokens:
            return tokenizer.encode(text, add_special_tokens=False)
        ids: list[int] = []
        for fragment in _special_pattern(self.special_tokens).split(text):
            if fragment:
                ids += tokenizer.encode(fragment, add_special_tokens=False)
        return ids


_PATTERNS: dict[tuple[str, ...], re.Pattern[str]] = {}


def _special_pattern(specials: tuple[str, ...]) -> re.Pattern[str]:
    if specials not in _PATTERNS:
        longest_first = sorted(specials, key=len, reverse=True)
        _PATTERNS[specials] = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")
    return _PATTERNS[specials]


_ROLES = ("system", "developer", "user", "assistant", "tool")


def validate_messages(messages: Sequence[Message]) -> None:
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in _ROLES:
            raise ValueError(f"message {index}: role {role!r} is not one of {_ROLES}")
        if not isinstance(message.get("content", ""), str):
            raise ValueError(f"message {index}: content must be a string")


def trained_messages(messages: Sequence[Message], train_on: TrainOn) -> list[bool]:
    """Whether each message's content and end-of-turn marker carry loss weight."""
    roles = [m["role"] for m in messages]
    if train_on is TrainOn.LAST_ASSISTANT_MESSAGE:
        last = max((i for i, r in enumerate(roles) if r == "assistant"), default=None)
        chosen = [i == last for i in range(len(messages))]
    elif train_on is TrainOn.ALL_ASSISTANT_MESSAGES:
        chosen = [r == "assistant" for r in roles]
    elif train_on in (TrainOn.ALL_MESSAGES, TrainOn.ALL_TOKENS):
        chosen = [True] * len(messages)
    elif train_on is TrainOn.PROMPT:
        chosen = [r in ("system", "developer", "user") for r in roles]
    else:
        raise ValueError(f"unknown train_on {train_on!r}")
    if train_on is not TrainOn.ALL_TOKENS:
        chosen = [bool(m.get("trainable", c)) for m, c in zip(messages, chosen, strict=True)]
    return chosen


def build_supervised_example(
    renderer: Renderer,
    tokenizer: Tokenizer,
    messages: Sequence[Message],
    train_on: TrainOn | str = TrainOn.LAST_ASSISTANT_MESSAGE,
    max_length: int | None = None,
    tools: Sequence[dict] | None = None,
) -> tuple[list[int], list[float]]:
    """Token ids of the rendered conversation and a weight per token: 1.0 on the tokens to
    train on (a trained message's content and end-of-turn marker), 0.0 elsewhere. Weights
    line up with the tokens themselves; the trainer shifts them against its predictions.

    Raises ValueError when no token is left to train on, so no example silently adds zero loss.
    """
    train_on = TrainOn(train_on)
    validate_messages(messages)
    chosen = trained_messages(messages, train_on)
    everything = train_on is TrainOn.ALL_TOKENS
    token_ids: list[int] = []
    weights: list[float] = []

    def add(text: str, trained: bool) -> None:
        ids = renderer.encode(tokenizer, text)
        token_ids.extend(ids)
        weights.extend([1.0 if trained else 0.0] * len(ids))

    add(renderer.bos_text + renderer.preamble(messages, tools), everything)
    for index, trained in enumerate(chosen):
        rendered = renderer.render_message(messages, index, tools)
        add(rendered.prefix, everything)
        add(rendered.content, trained or everything)
        add(rendered.suffix, trained or everything)
    add(renderer.closing(messages), everything)

    if not any(weights):
        raise ValueError(
            f"{renderer.name} renderer: conversation of {len(messages)} messages has no tokens "
            f"to train on with train_on={train_on.value!r} (check the roles and 'trainable' flags)"
        )
    if max_length is not None and len(token_ids) > max_length:
        token_ids, weights = token_ids[:max_length], weights[:max_length]
        if not any(weights):
            raise ValueError(
                f"{renderer.name} renderer: max_length={max_length} truncates away every token "
                "to train on; raise max_length or shorten the prompt"
            )
    return token_ids, weights
