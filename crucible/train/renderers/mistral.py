"""Mistral chat format of the v3 (Tekken) instruct tokenizer, as mistral-common encodes it:
system prompts join the last user turn, tool definitions sit just before it."""

from __future__ import annotations

import json
from collections.abc import Sequence

from crucible.train.renderers.base import (
    Message,
    RenderedMessage,
    Renderer,
    arguments_as_dict,
    tool_function,
)


def _last_user_index(messages: Sequence[Message]) -> int:
    return max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)


class MistralRenderer(Renderer):
    """The assistant header is empty: an assistant turn is its content and `</s>`."""

    name = "mistral"
    bos_text = "<s>"
    special_tokens = (
        "<s>",
        "</s>",
        "[INST]",
        "[/INST]",
        "[AVAILABLE_TOOLS]",
        "[/AVAILABLE_TOOLS]",
        "[TOOL_CALLS]",
        "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]",
    )
    stop_strings = ("</s>",)

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        message, role = messages[index], messages[index]["role"]
        content = message.get("content", "")
        if role == "system":
            if _last_user_index(messages) < 0:
                raise ValueError("mistral renderer: a system prompt needs a user message to join")
            return RenderedMessage("", "", "")
        if role == "user":
            prefix = "[INST]"
            if index == _last_user_index(messages):
                system = "\n\n".join(m.get("content", "") for m in messages if m["role"] == "system")
                content = f"{system}\n\n{content}" if system else content
                if tools:
                    listing = [{"type": "function", "function": tool_function(t)} for t in tools]
                    prefix = f"[AVAILABLE_TOOLS]{json.dumps(listing)}[/AVAILABLE_TOOLS][INST]"
            return RenderedMessage(prefix, content, "[/INST]")
        if role == "tool":
            payload = {"content": content, "call_id": message.get("tool_call_id", "")}
            return RenderedMessage("[TOOL_RESULTS]", json.dumps(payload), "[/TOOL_RESULTS]")
        calls = message.get("tool_calls", [])
        if calls:
            listed = []
            for call in calls:
                entry = {"name": call["name"], "arguments": arguments_as_dict(call)}
                if call.get("id"):
                    entry["id"] = call["id"]
                listed.append(entry)
            content += "[TOOL_CALLS]" + json.dumps(listed)
        return RenderedMessage("", content, "</s>")

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        return ""

    def parse_assistant_text(self, text: str) -> Message:
        content, _, calls_text = text.partition("[TOOL_CALLS]")
        message: Message = {"role": "assistant", "content": content}
        if calls_text:
            message["tool_calls"] = [
                {key: call[key] for key in ("name", "arguments", "id") if key in call}
                for call in json.loads(calls_text)
            ]
        return message
