"""Llama 3 chat format as Meta's llama-models encodes it (`ChatFormat.encode_dialog_prompt`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from crucible.train.renderers.base import Message, RenderedMessage, Renderer, arguments_as_dict


class Llama3Renderer(Renderer):
    name = "llama3"
    bos_text = "<|begin_of_text|>"
    special_tokens = (
        "<|begin_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|python_tag|>",
    )
    stop_strings = ("<|eot_id|>", "<|eom_id|>")

    def _header(self, role: str) -> str:
        return f"<|start_header_id|>{'ipython' if role == 'tool' else role}<|end_header_id|>\n\n"

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        if tools:
            raise ValueError("llama3 renderer: describe tools in the system message instead")
        message = messages[index]
        content = message.get("content", "")
        for call in message.get("tool_calls", []):
            # llama-models' JSON tool prompt format for custom tools.
            payload = {"type": "function", "name": call["name"], "parameters": arguments_as_dict(call)}
            content += json.dumps(payload)
        return RenderedMessage(self._header(message["role"]), content, "<|eot_id|>")

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        return self._header("assistant")

    def parse_assistant_text(self, text: str) -> Message:
        text = text.removeprefix("<|python_tag|>")
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and "name" in payload and "parameters" in payload:
            call = {"name": payload["name"], "arguments": payload["parameters"]}
            return {"role": "assistant", "content": "", "tool_calls": [call]}
        return {"role": "assistant", "content": text}
