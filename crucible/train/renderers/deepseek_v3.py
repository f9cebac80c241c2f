"""DeepSeek V3 chat format, following the chat template of deepseek-ai/DeepSeek-V3-0324."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from crucible.train.renderers.base import Message, RenderedMessage, Renderer, arguments_as_text

_EOS = "<｜end▁of▁sentence｜>"
_TOOL_CALL = re.compile(
    r"<｜tool▁call▁begin｜>\w+<｜tool▁sep｜>(.*?)\n```json\n(.*?)\n```<｜tool▁call▁end｜>", re.DOTALL
)
_THINK = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*", re.DOTALL)


class DeepSeekV3Renderer(Renderer):
    """The user turn's `<｜Assistant｜>` marker is rendered as the next assistant turn's prefix
    (same text), so it is never trained as part of a user message."""

    name = "deepseek_v3"
    bos_text = "<｜begin▁of▁sentence｜>"
    special_tokens = (
        "<｜begin▁of▁sentence｜>",
        _EOS,
        "<｜User｜>",
        "<｜Assistant｜>",
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁calls▁end｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁outputs▁begin｜>",
        "<｜tool▁outputs▁end｜>",
        "<｜tool▁output▁begin｜>",
        "<｜tool▁output▁end｜>",
    )
    stop_strings = (_EOS,)

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        if tools:
            raise ValueError("deepseek_v3 renderer: describe tools in the system message instead")
        message, role = messages[index], messages[index]["role"]
        previous = messages[index - 1]["role"] if index else None
        content = message.get("content", "")
        if role == "system":
            # The template gathers every system message at the start; only a leading block
            # renders in place.
            if any(m["role"] != "system" for m in messages[:index]):
                raise ValueError(
                    f"deepseek_v3 renderer: system message {index} follows other messages; "
                    "DeepSeek V3 only has a system prompt at the start"
                )
            return RenderedMessage("\n\n" if index else "", content, "")
        if role == "user":
            return RenderedMessage("<｜User｜>", content, "")
        if role == "tool":
            first = previous != "tool"
            prefix = "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" if first else "\n<｜tool▁output▁begin｜>"
            return RenderedMessage(prefix, content, "<｜tool▁output▁end｜>")
        prefix = {"user": "<｜Assistant｜>", "tool": "<｜tool▁outputs▁end｜>"}.get(previous, "")
        calls = message.get("tool_calls", [])
        if calls:
            content += "<｜tool▁calls▁begin｜>" + "\n".join(
                f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{call['name']}\n```json\n"
                f"{arguments_as_text(call)}\n```<｜tool▁call▁end｜>"
                for call in calls
            ) + "<｜tool▁calls▁end｜>"
        return RenderedMessage(prefix, content, _EOS)

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        if messages and messages[-1]["role"] == "tool":
            return "<｜tool▁outputs▁end｜>"
        return "<｜Assistant｜>"

    def closing(self, messages: Sequence[Message]) -> str:
        last = messages[-1]["role"] if messages else None
        return {"user": "<｜Assistant｜>", "tool": "<｜tool▁outputs▁end｜>"}.get(last, "")

    def parse_assistant_text(self, text: str) -> Message:
        message: Message = {"role": "assistant"}
        match = _THINK.match(text)
        if match:
            message["thinking"], text = match.group(1).strip(), text[match.end() :]
        calls = [
            {"name": name, "arguments": json.loads(arguments)}
            for name, arguments in _TOOL_CALL.findall(text)
        ]
        message["content"] = text.split("<｜tool▁calls▁begin｜>")[0]
        if calls:
            message["tool_calls"] = calls
        return message
