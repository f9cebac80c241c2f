"""ChatML (`<|im_start|>role ... <|im_end|>`) as SmolLM2 and Qwen2 use it, with Qwen's
`<tool_call>` / `<tool_response>` conventions for tools."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from crucible.train.renderers.base import (
    Message,
    RenderedMessage,
    Renderer,
    to_json,
)

_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def _tool_call_text(call) -> str:
    arguments = call.get("arguments", {})
    arguments = arguments if isinstance(arguments, str) else to_json(arguments)
    return f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {arguments}}}\n</tool_call>'


class ChatMLRenderer(Renderer):
    """Turns end with `<|im_end|>`; the newline after it opens the next turn's prefix, so the
    trained tokens of a turn are exactly its content and `<|im_end|>`."""

    name = "chatml"
    special_tokens = (
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<tool_call>",
        "</tool_call>",
        "<tool_response>",
        "</tool_response>",
    )
    stop_strings = ("<|im_end|>",)

    def __init__(self, default_system_prompt: str | None = None):
        self.default_system_prompt = default_system_prompt

    def _tools_system(self, tools: Sequence[dict]) -> str:
        listing = "".join("\n" + to_json(tool) for tool in tools)
        return "\n\n" + _TOOLS_INTRO + listing + _TOOLS_OUTRO

    def preamble(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> str:
        if messages and messages[0]["role"] == "system":
            return ""
        if tools:
            head = f"{self.default_system_prompt}\n\n" if self.default_system_prompt else ""
            return "<|im_start|>system\n" + head + self._tools_system(tools)[2:] + "<|im_end|>"
        if self.default_system_prompt is not None and messages:
            return f"<|im_start|>system\n{self.default_system_prompt}<|im_end|>"
        return ""

    def _lead(self, messages: Sequence[Message], index: int, tools) -> str:
        return "\n" if index > 0 or self.preamble(messages, tools) else ""

    def assistant_content(self, messages: Sequence[Message], index: int) -> tuple[str, str]:
        """(text added to the header, content) of an assistant turn."""
        return "", messages[index].get("content", "")

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        message, role = messages[index], messages[index]["role"]
        lead = self._lead(messages, index, tools)
        if role == "tool":
            first = index == 0 or messages[index - 1]["role"] != "tool"
            last = index == len(messages) - 1 or messages[index + 1]["role"] != "tool"
            prefix = (lead + "<|im_start|>user" if first else "") + "\n<tool_response>\n"
            suffix = "\n</tool_response>" + ("<|im_end|>" if last else "")
            return RenderedMessage(prefix, message.get("content", ""), suffix)
        if role == "assistant":
            header_extra, content = self.assistant_content(messages, index)
            for number, call in enumerate(message.get("tool_calls", [])):
                content += ("\n" if content or number else "") + _tool_call_text(call)
            return RenderedMessage(
                f"{lead}<|im_start|>assistant\n{header_extra}", content, "<|im_end|>"
            )
        content = message.get("content", "")
        if index == 0 and role == "system" and tools:
            return RenderedMessage(
                "<|im_start|>system\n", content, self._tools_system(tools) + "<|im_end|>"
            )
        return RenderedMessage(f"{lead}<|im_start|>{role}\n", content, "<|im_end|>")

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        lead = "\n" if messages or self.preamble(messages, tools) else ""
        return lead + "<|im_start|>assistant\n"

    def closing(self, messages: Sequence[Message]) -> str:
        return "\n" if messages else ""

    def parse_assistant_text(self, text: str) -> Message:
        calls = []
        for match in _TOOL_CALL.finditer(text):
            payload = json.loads(match.group(1))
            calls.append({"name": payload["name"], "arguments": payload.get("arguments", {})})
        message: Message = {"role": "assistant", "content": _TOOL_CALL.sub("", text).strip()}
        if calls:
            message["tool_calls"] = calls
        return message


class SmolLM2Renderer(ChatMLRenderer):
    """ChatML with the system prompt SmolLM2's template adds when the conversation has none."""

    name = "smollm2"

    def __init__(
        self,
        default_system_prompt: str | None = (
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        ),
    ):
        super().__init__(default_system_prompt)
