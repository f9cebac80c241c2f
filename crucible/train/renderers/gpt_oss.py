"""GPT-OSS harmony format, following the chat template of openai/gpt-oss models: a fixed
system message, the caller's system prompt as the developer message, and channels."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from typing import Any

from crucible.train.renderers.base import (
    Message,
    RenderedMessage,
    Renderer,
    arguments_as_dict,
    to_json,
    tool_function,
)

_SEGMENT = re.compile(
    r"(?:<\|start\|>assistant)?(?: to=functions\.(?P<tool>[\w.-]+))?<\|channel\|>"
    r"(?P<channel>\w+)[^<]*<\|message\|>(?P<body>.*?)(?:<\|end\|>|<\|call\|>|<\|return\|>|$)",
    re.DOTALL,
)


def _typescript_type(spec: dict[str, Any]) -> str:
    kind = spec.get("type")
    if kind == "string" and spec.get("enum"):
        return '"' + '" | "'.join(spec["enum"]) + '"'
    if kind in ("number", "integer"):
        return "number"
    if kind in ("string", "boolean"):
        return kind
    if kind == "array":
        items = spec.get("items")
        return _typescript_type(items) + "[]" if items else "any[]"
    if kind == "object":
        return "object"
    return "any"


def tools_namespace(tools: Sequence[dict]) -> str:
    """The `# Tools` section of the developer message: tools as a TypeScript namespace."""
    text = "# Tools\n\n## functions\n\nnamespace functions {\n\n"
    for tool in map(tool_function, tools):
        text += f"// {tool.get('description', '')}\ntype {tool['name']} = "
        parameters = tool.get("parameters") or {}
        properties = parameters.get("properties") or {}
        if not properties:
            text += "() => any;\n\n"
            continue
        text += "(_: {\n"
        for name, spec in properties.items():
            if spec.get("description"):
                text += f"// {spec['description']}\n"
            optional = "" if name in parameters.get("required", []) else "?"
            text += f"{name}{optional}: {_typescript_type(spec)},\n"
        text += "}) => any;\n\n"
    return text + "} // namespace functions"


class GptOssRenderer(Renderer):
    """An assistant turn's header is `<|start|>assistant`; everything the model writes after it
    (channel, message, and any analysis turn before a tool call) is trained content. The last
    assistant turn ends in `<|return|>` and keeps its thinking, as in training with the
    official template; earlier turns end in `<|end|>` and drop it."""

    name = "gpt_oss"
    special_tokens = (
        "<|start|>",
        "<|end|>",
        "<|message|>",
        "<|channel|>",
        "<|return|>",
        "<|call|>",
        "<|constrain|>",
    )
    stop_strings = ("<|return|>", "<|call|>")

    def __init__(
        self,
        reasoning_effort: str = "medium",
        current_date: str | None = None,
        model_identity: str = "You are ChatGPT, a large language model trained by OpenAI.",
    ):
        self.reasoning_effort = reasoning_effort
        self.current_date = current_date or datetime.date.today().isoformat()
        self.model_identity = model_identity

    def preamble(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> str:
        text = (
            f"<|start|>system<|message|>{self.model_identity}\nKnowledge cutoff: 2024-06\n"
            f"Current date: {self.current_date}\n\nReasoning: {self.reasoning_effort}\n\n"
            "# Valid channels: analysis, commentary, final. Channel must be included for every message."
        )
        if tools:
            text += "\nCalls to these tools must go to the commentary channel: 'functions'."
        text += "<|end|>"
        if tools and not (messages and messages[0]["role"] in ("system", "developer")):
            text += f"<|start|>developer<|message|>{tools_namespace(tools)}<|end|>"
        return text

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        message, role = messages[index], messages[index]["role"]
        content = message.get("content", "")
        if role in ("system", "developer"):
            if index != 0:
                raise ValueError(f"gpt_oss renderer: {role} message {index} is not the first message")
            tools_text = tools_namespace(tools) if tools else ""
            return RenderedMessage(
                "<|start|>developer<|message|># Instructions\n\n", content, f"\n\n{tools_text}<|end|>"
            )
        if role == "user":
            return RenderedMessage("<|start|>user<|message|>", content, "<|end|>")
        if role == "tool":
            name = self._last_tool_call_name(messages, index)
            prefix = f"<|start|>functions.{name} to=assistant<|channel|>commentary<|message|>"
            return RenderedMessage(prefix, to_json(content), "<|end|>")
        calls = message.get("tool_calls", [])
        if calls:
            if len(calls) > 1:
                raise ValueError(f"gpt_oss renderer: message {index} has {len(calls)} tool calls; harmony takes one per turn")
            later_answer = any(
                m["role"] == "assistant" and not m.get("tool_calls") for m in messages[index + 1 :]
            )
            analysis = content or message.get("thinking", "")
            body = ""
            if analysis and not later_answer:
                body = f"<|channel|>analysis<|message|>{analysis}<|end|><|start|>assistant"
            call = calls[0]
            body += (
                f" to=functions.{call['name']}<|channel|>commentary json<|message|>"
                + to_json(arguments_as_dict(call))
            )
            return RenderedMessage("<|start|>assistant", body, "<|call|>")
        if index == len(messages) - 1:
            body = ""
            if "thinking" in message:
                body = f"<|channel|>analysis<|message|>{message['thinking']}<|end|><|start|>assistant"
            return RenderedMessage("<|start|>assistant", body + f"<|channel|>final<|message|>{content}", "<|return|>")
        return RenderedMessage("<|start|>assistant", f"<|channel|>final<|message|>{content}", "<|end|>")

    def _last_tool_call_name(self, messages: Sequence[Message], index: int) -> str:
        for message in reversed(messages[:index]):
            if message["role"] == "assistant":
                if message.get("tool_calls"):
                    return message["tool_calls"][0]["name"]
                break
        raise ValueError(f"gpt_oss renderer: tool message {index} follows no assistant tool call")

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        return "<|start|>assistant"

    def parse_assistant_text(self, text: str) -> Message:
        message: Message = {"role": "assistant", "content": ""}
        for match in _SEGMENT.finditer(text):
            channel, body = match.group("channel"), match.group("body")
            if match.group("tool"):
                message["tool_calls"] = [{"name": match.group("tool"), "arguments": json.loads(body)}]
            elif channel == "analysis":
                message["thinking"] = body
            else:
                message["content"] = body
        return message
