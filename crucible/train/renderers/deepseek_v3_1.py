"""DeepSeek V3.1 chat format, following the chat template of deepseek-ai/DeepSeek-V3.1.

Differences from V3: the assistant tag is followed by `</think>` (non-thinking) or `<think>`
(thinking mode), earlier answers keep only their text after `</think>`, tool calls carry no
`function` type or JSON fence, tool outputs are not wrapped in an outputs block, and nothing
follows a final user turn unless a generation prompt is asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from crucible.train.renderers.base import Message, RenderedMessage, Renderer, arguments_as_text

_EOS = "<｜end▁of▁sentence｜>"
_ASSISTANT = "<｜Assistant｜>"
_CALLS_BEGIN, _CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
_TOOL_CALL = re.compile(r"<｜tool▁call▁begin｜>(.*?)<｜tool▁sep｜>(.*?)<｜tool▁call▁end｜>", re.DOTALL)


def _answer_only(content: str) -> str:
    # The template keeps only what follows the first `</think>` of an earlier answer.
    return content.split("</think>", 1)[1] if "</think>" in content else content


class DeepSeekV31Renderer(Renderer):
    """``thinking`` is the template's switch. In thinking mode an assistant turn after the last
    user message that carries ``thinking`` is rendered as the model writes it after the
    ``<think>`` generation prompt (``reasoning</think>answer``), so its reasoning is trained;
    every other assistant turn renders as the template does, reasoning dropped."""

    name = "deepseek_v3_1"
    bos_text = "<｜begin▁of▁sentence｜>"
    special_tokens = (
        "<｜begin▁of▁sentence｜>",
        _EOS,
        "<｜User｜>",
        _ASSISTANT,
        "<think>",
        "</think>",
        _CALLS_BEGIN,
        _CALLS_END,
        "<｜tool▁call▁begin｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁output▁begin｜>",
        "<｜tool▁output▁end｜>",
    )
    stop_strings = (_EOS,)

    def __init__(self, thinking: bool = False):
        self.thinking = thinking

    def preamble(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> str:
        if tools:
            raise ValueError("deepseek_v3_1 renderer: describe tools in the system message instead")
        # Every system message, wherever it stands, joins the prompt right after BOS.
        return "\n\n".join(m.get("content", "") for m in messages if m["role"] == "system")

    def _keeps_thinking(self, messages: Sequence[Message], index: int) -> bool:
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        return self.thinking and index > last_user and messages[index].get("thinking") is not None

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        message, role = messages[index], messages[index]["role"]
        previous = messages[index - 1]["role"] if index else None
        content = message.get("content", "")
        if role == "system":
            return RenderedMessage("", "", "")
        if role == "user":
            return RenderedMessage("<｜User｜>", content, "")
        if role == "tool":
            return RenderedMessage("<｜tool▁output▁begin｜>", content, "<｜tool▁output▁end｜>")
        if role != "assistant":
            raise ValueError(f"deepseek_v3_1 renderer: message {index} has role {role!r}, which V3.1 cannot render")
        calls = message.get("tool_calls", [])
        after_user = previous == "user"
        if calls:
            content += _CALLS_BEGIN + "".join(
                f"<｜tool▁call▁begin｜>{call['name']}<｜tool▁sep｜>{arguments_as_text(call)}<｜tool▁call▁end｜>"
                for call in calls) + _CALLS_END
        elif previous != "tool":
            # An answer after tool output is written as is; any other keeps only its text after `</think>`.
            content = _answer_only(content)
        if not after_user:
            return RenderedMessage("", content, _EOS)
        if self._keeps_thinking(messages, index):
            return RenderedMessage(_ASSISTANT + "<think>", f"{message['thinking']}</think>{content}", _EOS)
        return RenderedMessage(_ASSISTANT + "</think>", content, _EOS)

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        # As in the template: after tool output the model continues without a new tag.
        if messages and messages[-1]["role"] == "user":
            return _ASSISTANT + ("<think>" if self.thinking else "</think>")
        return ""

    def parse_assistant_text(self, text: str) -> Message:
        message: Message = {"role": "assistant"}
        if "</think>" in text:
            thinking, text = text.split("</think>", 1)
            message["thinking"] = thinking.removeprefix("<think>")
        content, _, calls_text = text.partition(_CALLS_BEGIN)
        message["content"] = content
        calls = [{"name": name, "arguments": json.loads(arguments)}
                 for name, arguments in _TOOL_CALL.findall(calls_text)]
        if calls:
            message["tool_calls"] = calls
        return message
