"""Answer prompts with a saved Hugging Face checkpoint: chat template in, greedy text out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


class ChatModel:
    """A causal LM and its tokenizer, loaded once, answering chat prompts."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.checkpoint = str(checkpoint)
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"checkpoint {self.checkpoint}: tokenizer has no chat_template to build prompts with")
        self.model = AutoModelForCausalLM.from_pretrained(self.checkpoint, dtype=torch.float32).to(device).eval()
        self.device = device

    def _prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(encoded, dict) or hasattr(encoded, "keys"):
            encoded = encoded["input_ids"]
        return list(encoded)

    def answer(self, prompts: Sequence[str], max_new_tokens: int = 48, system: str | None = None) -> list[Generation]:
        """Greedy answers, one prompt at a time (no padding games; latency is per prompt)."""
        import torch

        results = []
        for prompt in prompts:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
            ids = self._prompt_ids(messages)
            # Keep the end of an over-long prompt (the question and the assistant header).
            room = getattr(self.model.config, "max_position_embeddings", None)
            if room and len(ids) + max_new_tokens > room:
                ids = ids[-(room - max_new_tokens):]
            started = time.perf_counter()
            with torch.inference_mode():
                output = self.model.generate(
                    torch.tensor([ids], device=self.device), attention_mask=torch.ones(1, len(ids), dtype=torch.long,
                                                                                       device=self.device),
                    max_new_tokens=max_new_tokens, do_sample=False,
                    eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id
                    if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id,
                )
            completion = output[0, len(ids):].tolist()
            latency = (time.perf_counter() - started) * 1000
            text = self.tokenizer.decode(completion, skip_special_tokens=True).strip()
            results.append(Generation(prompt, text, len(ids), len(completion), latency))
        return results
