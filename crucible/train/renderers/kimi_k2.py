"""Kimi K2 chat format, following the chat template of moonshotai/Kimi-K2-Instruct."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from crucible.train.renderers.base import (
    Message,
    RenderedMessage,
    Renderer,
    arguments_as_text,
    to_json,
)

DEFAULT_SYSTEM_PROMPT = "You are Kimi, an AI assistant created by Moonshot AI."
_TOOL_CALL = re.compile(
    r"<\|tool_call_begin\|>\s*(.*?)\s*<\|tool_call_argument_begin\|>(.*?)<\|tool_call_end\|>",
    re.DOTALL,
)
_ROLE_TOKEN = {"user": "<|im_user|>", "assistant": "<|im_assistant|>"}


def tool_call_id(call, number: int) -> str:
    """Kimi names a call `functions.<name>:<index>` unless it already has an id."""
    return call.get("id") or f"functions.{call['name']}:{number}"


class KimiK2Renderer(Renderer):
    name = "kimi_k2"
    special_tokens = (
        "<|im_system|>",
        "<|im_user|>",
        "<|im_assistant|>",
        "<|im_middle|>",
        "<|im_end|>",
        "<|tool_calls_section_begin|>",
        "<|tool_calls_section_end|>",
        "<|tool_call_begin|>",
        "<|tool_call_argument_begin|>",
        "<|tool_call_end|>",
    )
    stop_strings = ("<|im_end|>",)

    def preamble(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> str:
        text = f"<|im_system|>tool_declare<|im_middle|>{to_json(list(tools))}<|im_end|>" if tools else ""
        if messages and messages[0]["role"] != "system":
            text += f"<|im_system|>system<|im_middle|>{DEFAULT_SYSTEM_PROMPT}<|im_end|>"
        return text

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        message, role = messages[index], messages[index]["role"]
        header = f"{_ROLE_TOKEN.get(role, '<|im_system|>')}{message.get('name') or role}<|im_middle|>"
        content = message.get("content", "")
        if role == "tool":
            content = f"## Return of {message.get('tool_call_id', '')}\n{content}"
        calls = message.get("tool_calls", [])
        if role == "assistant" and calls:
            content += "<|tool_calls_section_begin|>" + "".join(
                f"<|tool_call_begin|>{tool_call_id(call, number)}<|tool_call_argument_begin|>"
                f"{arguments_as_text(call)}<|tool_call_end|>"
                for number, call in enumerate(calls)
            ) + "<|tool_calls_section_end|>"
        return RenderedMessage(header, content, "<|im_end|>")

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        return "<|im_assistant|>assistant<|im_middle|>"

    def parse_assistant_text(self, text: str) -> Message:
        content, _, section = text.partition("<|tool_calls_section_begin|>")
        message: Message = {"role": "assistant", "content": content}
        calls = []
        for call_id, arguments in _TOOL_CALL.findall(section):
            name = call_id.removeprefix("functions.").rsplit(":", 1)[0]
            calls.append({"name": name, "arguments": json.loads(arguments), "id": call_id})
        if calls:
            message["tool_calls"] = calls
        return message
