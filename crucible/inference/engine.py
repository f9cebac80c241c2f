"""The one engine that runs causal LMs: batched generation with a KV cache and per-request samplers,
stop sequences from the chat renderer, and log-likelihood scoring with the harness's tokenization."""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from crucible.train.renderers import Renderer

# Used when a model's config names no context length (the harness's default too).
DEFAULT_MAX_LENGTH = 2048

# on_token(request index, token id): a streaming caller's hook into the decode loop.
TokenCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class GenerationRequest:
    """Either a raw ``prompt`` (used as is) or a chat in ``messages`` (rendered in the model's chat
    format with a generation prompt). ``temperature`` 0 is greedy; ``seed`` makes a sample
    reproducible whether the request runs alone or in a batch."""

    prompt: str | None = None
    messages: list[dict] | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generation:
    """``completion_tokens`` counts every token generated, the stopping one included; ``token_ids`` are
    those tokens (what RL trains on: re-encoding ``text`` need not give back the sampled tokens)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency_ms: float
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class Loglikelihood:
    logprob: float
    is_greedy: bool
    num_tokens: int


@dataclass
class _Prepared:
    """One generation request as tokens, with everything its decode loop checks."""

    index: int
    ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    uniforms: Any  # (max_new_tokens,) draws from the request's seeded generator; None when greedy
    stop_ids: frozenset[int]
    stop_strings: tuple[str, ...]
    completion: list[int] = field(default_factory=list)
    text: str | None = None
    finish_reason: str = "length"
    latency_ms: float = 0.0


class InferenceEngine:
    """A causal LM and its tokenizer, loaded once, answering batches of requests.

    Requests are sorted by prompt length and cut into batches of ``batch_size``; each batch is
    left-padded, prefilled once and decoded token by token through the KV cache, and a finished
    row leaves the batch (and the cache) at once.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, device: str = "cpu",
                 batch_size: int = 8, renderer: Renderer | None = None, name: str = "model") -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.batch_size = batch_size
        self.renderer = renderer
        self.name = name
        config = model.config
        self.max_length = (getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
                           or DEFAULT_MAX_LENGTH)
        # End-of-sequence ids end every request: the tokenizer's, and any more the model's generation
        # config lists (Llama 3 ends turns with <|eot_id|> as well as <|end_of_text|>).
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        configured = configured if isinstance(configured, list) else [configured]
        self._end_ids = frozenset(i for i in [tokenizer.eos_token_id, *configured] if i is not None)
        parameters = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in parameters
        # transformers 5.2x renamed `past_key_values` to `cache`; older versions know only the first.
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self._single_tokens: dict[str, int | None] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", batch_size: int = 8,
                        renderer: str | None = None) -> InferenceEngine:
        """Load a Hugging Face folder, or a LoRA adapter folder (merged into its base model).

        The chat format is ``renderer`` when given, else the one the training run recorded
        (``recipe.yaml`` beside the checkpoint), else one derived from the model's name, else the
        tokenizer's chat template with its end-of-sequence token as the stop.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from crucible.train.renderers import get_renderer

        path = Path(path)
        adapter = path / "adapter_config.json"
        if adapter.exists():
            from peft import PeftModel

            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            if not base:
                raise ValueError(f"{adapter}: no base_model_name_or_path to merge the LoRA adapter into")
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                              str(path)).merge_and_unload()
            tokenizer = AutoTokenizer.from_pretrained(path if (path / "tokenizer_config.json").exists() else base)
        elif (path / "config.json").exists():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path)
        else:
            raise FileNotFoundError(f"checkpoint {path}: expected a Hugging Face model folder (config.json) "
                                    "or a LoRA adapter folder (adapter_config.json)")
        name = renderer or recorded_renderer(path) or derived_renderer(path, model.config)
        return cls(model, tokenizer, device=device, batch_size=batch_size,
                   renderer=get_renderer(name) if name else None, name=str(path))

    # -- generation -----------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], batch_size: int | None = None,
                 on_token: TokenCallback | None = None) -> list[Generation]:
        """Completions in request order; greedy results do not depend on how requests are batched.

        ``on_token(index, token_id)`` (for streaming) is called from the decode loop with each new token
        of request ``index`` as it is chosen, except a token that ends the request (end of sequence or
        the chat format's end of turn); a stop string is only found in decoded text, so its tokens are
        reported and the caller cuts them (the final :class:`Generation` has the cut text).
        """
        import torch

        encoded: dict[str, list[int]] = {}  # a chat's ids by its JSON: a GRPO group renders its prompt once
        prepared = [self._prepare(i, request, encoded) for i, request in enumerate(requests)]
        order = sorted(prepared, key=lambda p: len(p.ids))
        size = batch_size or self.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                self._decode_batch(order[start:start + size], on_token)
        return [Generation(p.text or "", len(p.ids), len(p.completion), p.finish_reason, p.latency_ms,
                           tuple(p.completion)) for p in prepared]

    def chat(self, prompts: Sequence[str], max_new_tokens: int = 64, system: str | None = None) -> list[Generation]:
        """Greedy answers to single-turn user prompts, surrounding whitespace stripped."""
        head = [{"role": "system", "content": system}] if system else []
        requests = [GenerationRequest(messages=[*head, {"role": "user", "content": prompt}],
                                      max_new_tokens=max_new_tokens) for prompt in prompts]
        return [Generation(g.text.strip(), g.prompt_tokens, g.completion_tokens, g.finish_reason, g.latency_ms)
                for g in self.generate(requests)]

    def prompt_length(self, request: GenerationRequest) -> int:
        """How many tokens the request's prompt (a chat rendered in the model's format) encodes to, before
        :meth:`generate` would cut an over-long one; a server checks it against ``max_length`` first."""
        if (request.prompt is None) == (request.messages is None):
            raise ValueError("generation request: give exactly one of prompt and messages")
        if request.messages is not None:
            return len(self._chat_ids(0, request.messages))
        return len(self._encode(request.prompt))

    def _prepare(self, index: int, request: GenerationRequest, encoded: dict[str, list[int]]) -> _Prepared:
        import torch

        if (request.prompt is None) == (request.messages is None):
            raise ValueError(f"generation request {index}: give exactly one of prompt and messages")
        if request.max_new_tokens < 0 or request.max_new_tokens >= self.max_length:
            raise ValueError(f"generation request {index}: max_new_tokens={request.max_new_tokens} must be in "
                             f"[0, {self.max_length}) for {self.name}")
        if request.temperature < 0 or not 0 < request.top_p <= 1:
            raise ValueError(f"generation request {index}: temperature must be >= 0 and top_p in (0, 1], "
                             f"got {request.temperature} and {request.top_p}")
        stop_ids = set(self._end_ids)
        stop_strings = [s for s in request.stop if s]
        if request.messages is not None:
            key = json.dumps(request.messages, sort_keys=True, default=str)
            if key not in encoded:
                encoded[key] = self._chat_ids(index, request.messages)
            ids = encoded[key]
            if self.renderer is not None:
                for stop in self.renderer.stop_sequences():
                    single = self._single_token(stop)
                    if single is None:
                        stop_strings.append(stop)
                    else:
                        stop_ids.add(single)
        else:
            ids = self._encode(request.prompt)
        # Keep the end of an over-long prompt: the question and the generation prompt are there.
        ids = ids[-(self.max_length - request.max_new_tokens):]
        if not ids:
            raise ValueError(f"generation request {index}: the prompt encodes to no tokens")
        uniforms = None
        if request.temperature > 0:
            # Every draw the request will need, up front: the sample depends on its seed alone, never on
            # which requests share its batch, and the batch samples all rows in one inverse-CDF step.
            seed = request.seed if request.seed is not None else int(torch.randint(2**62, (1,)))
            generator = torch.Generator(device=self.device).manual_seed(seed)
            uniforms = torch.rand(max(request.max_new_tokens, 1), generator=generator, device=self.device)
        return _Prepared(index, ids, request.max_new_tokens, request.temperature, request.top_p, uniforms,
                         frozenset(stop_ids), tuple(stop_strings))

    def _chat_ids(self, index: int, messages: list[dict]) -> list[int]:
        if self.renderer is not None:
            return self.renderer.encode(self.tokenizer, self.renderer.render_text(messages, add_generation_prompt=True))
        if self.tokenizer.chat_template is None:
            raise ValueError(f"generation request {index}: {self.name} has no chat format (no renderer recorded and "
                             "no chat_template in its tokenizer); pass renderer= or send a raw prompt")
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _single_token(self, text: str) -> int | None:
        """The id of ``text`` when the tokenizer has it as one added (special) token; such a stop is
        matched on ids, since decoding without special tokens hides it. Remembered per stop: the
        tokenizer does not change, and asking it costs more than a decode step of a small model."""
        if text not in self._single_tokens:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            added = set(self.tokenizer.all_special_ids) | set(self.tokenizer.get_added_vocab().values())
            self._single_tokens[text] = ids[0] if len(ids) == 1 and ids[0] in added else None
        return self._single_tokens[text]

    def _decode_batch(self, batch: list[_Prepared], on_token: TokenCallback | None = None) -> None:
        import torch

        started = time.perf_counter()
        active = [p for p in batch if p.max_new_tokens > 0]
        for p in batch:
            if p.max_new_tokens == 0:
                p.text = ""
        if not active:
            return
        device = self.device
        # Requests with the same prompt (a GRPO group) prefill it once; its cache is then copied per request.
        unique: dict[tuple[int, ...], int] = {}
        source = [unique.setdefault(tuple(p.ids), len(unique)) for p in active]
        prompts = list(unique)
        width = max(len(ids) for ids in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + list(ids) for ids in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            **self._last_logit_only())
        cache, logits = self._cache_of(output), output.logits[:, -1, :]
        if len(prompts) < len(active):
            rows = torch.tensor(source, device=device)
            cache.batch_select_indices(rows)
            logits, mask = logits[rows], mask[rows]
        next_position = mask.sum(-1, keepdim=True)

        # Per-row state lives in tensors, cut down together whenever rows finish.
        count = len(active)
        sampler = _Sampler(active, device)
        longest = max(p.max_new_tokens for p in active)
        limits = torch.tensor([p.max_new_tokens for p in active], device=device)
        stop_width = max(1, max(len(p.stop_ids) for p in active))
        stop_table = torch.tensor([sorted(p.stop_ids) + [-1] * (stop_width - len(p.stop_ids)) for p in active],
                                  device=device)
        history = torch.empty(count, longest, dtype=torch.long, device=device)
        alive = torch.arange(count, device=device)  # each current row's index into `active`
        alive_list = list(range(count))
        # Stop strings need the decoded text at every step: only rows that have any pay for it.
        watched = any(p.stop_strings for p in active)
        ended_by_token: set[int] = set()
        for step in range(longest):
            tokens = sampler.choose(logits, step)
            history[alive, step] = tokens
            by_token = (tokens.unsqueeze(1) == stop_table).any(dim=1)
            done = by_token | (limits <= step + 1)
            if on_token is not None:
                for row, (token, ending) in enumerate(zip(tokens.tolist(), by_token.tolist(), strict=True)):
                    if not ending:
                        on_token(active[alive_list[row]].index, token)
            if watched:
                for row, token in enumerate(tokens.tolist()):
                    p = active[alive_list[row]]
                    if p.stop_strings:
                        p.completion.append(token)
                        if not done[row] and self._stop_string_in(p):
                            done[row] = True
            finished = done.nonzero().flatten().tolist()
            if finished:
                now = (time.perf_counter() - started) * 1000
                ended_by_token.update(alive_list[row] for row in finished if by_token[row])
                for row in finished:
                    active[alive_list[row]].latency_ms = now
                    active[alive_list[row]].completion = [step + 1]  # the length, for now
                if len(finished) == len(alive_list):
                    break
                keep = (~done).nonzero().flatten()
                cache.batch_select_indices(keep)
                alive, limits, stop_table, mask, next_position = (alive[keep], limits[keep], stop_table[keep],
                                                                  mask[keep], next_position[keep])
                tokens = tokens[keep]
                sampler.keep(keep)
                gone = set(finished)
                alive_list = [index for row, index in enumerate(alive_list) if row not in gone]
            mask = torch.cat([mask, mask.new_ones(len(alive_list), 1)], dim=1)
            output = self.model(input_ids=tokens.unsqueeze(1), attention_mask=mask, position_ids=next_position,
                                use_cache=True, **{self._cache_argument: cache})
            cache, logits = self._cache_of(output), output.logits[:, -1, :]
            next_position = next_position + 1
        for index, (p, row) in enumerate(zip(active, history.tolist(), strict=True)):
            p.completion = row[:p.completion[0]]
            self._finish(p, ended_by_token=index in ended_by_token)

    @staticmethod
    def _cache_of(output: Any) -> Any:
        cache = getattr(output, "cache", None)
        return cache if cache is not None else output.past_key_values

    def _last_logit_only(self) -> dict[str, int]:
        return {"logits_to_keep": 1} if self._keeps_logits else {}

    def _stop_string_in(self, p: _Prepared) -> bool:
        text = self.tokenizer.decode(p.completion, skip_special_tokens=True)
        return any(s in text for s in p.stop_strings)

    def _finish(self, p: _Prepared, ended_by_token: bool) -> None:
        """Record the text and reason of a finished request; stop strings are found in decoded text."""
        if ended_by_token:
            p.text, p.finish_reason = self.tokenizer.decode(p.completion[:-1], skip_special_tokens=True), "stop"
            return
        text = self.tokenizer.decode(p.completion, skip_special_tokens=True)
        cuts = [text.find(s) for s in p.stop_strings if s in text]
        if cuts:
            p.text, p.finish_reason = text[:min(cuts)], "stop"
        else:
            p.text, p.finish_reason = text, "length"


    # -- log-likelihood -------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest],
                      batch_size: int | None = None) -> list[Loglikelihood]:
        """log p(continuation | context) per request, tokenized as lm-evaluation-harness's HFLM does:
        context and continuation are encoded together and split where the context's tokens end.

        Requests with the same context (the choices of a multiple-choice question) share one
        forward pass over it; only their continuations' tokens run separately, through its KV cache.
        """
        import torch

        pairs = [self._encode_pair(i, r) for i, r in enumerate(requests)]
        by_context: dict[tuple[int, ...], list[int]] = {}
        for index, (context, continuation) in enumerate(pairs):
            # Over-long inputs lose their start, as in the harness; the context is what precedes the continuation.
            whole = (context + continuation)[-(self.max_length + 1):]
            by_context.setdefault(tuple(whole[:-len(continuation)]), []).append(index)
        contexts = sorted(by_context, key=len, reverse=True)
        size = batch_size or self.batch_size
        results: dict[int, Loglikelihood] = {}
        with torch.inference_mode():
            for start in range(0, len(contexts), size):
                chunk = contexts[start:start + size]
                wanted = [(row, index) for row, context in enumerate(chunk) for index in by_context[context]]
                scored = self._continuation_logprobs(chunk, [(row, pairs[index][1]) for row, index in wanted])
                for (_, index), logprobs in zip(wanted, scored, strict=True):
                    target = torch.tensor(pairs[index][1], device=logprobs.device)
                    picked = logprobs.gather(1, target.unsqueeze(1)).squeeze(1)
                    results[index] = Loglikelihood(float(picked.sum()), bool((logprobs.argmax(-1) == target).all()),
                                                   len(target))
        return [results[index] for index in range(len(pairs))]

    def _encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids as the harness's ``tok_encode``: the tokenizer's special tokens (BOS) are added
        unless the text already starts with the BOS text."""
        if add_special_tokens is None:
            bos = self._prefix_token_id()
            add_special_tokens = not (bos is not None and text.startswith(self.tokenizer.decode(bos)))
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def _prefix_token_id(self) -> int | None:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    def _encode_pair(self, index: int, request: LoglikelihoodRequest) -> tuple[list[int], list[int]]:
        context, continuation = request.context, request.continuation
        if context == "":
            continuation_ids = self._encode(continuation, add_special_tokens=False)
            prefix = self._prefix_token_id()
            if continuation_ids and continuation_ids[0] == prefix:
                context_ids, continuation_ids = continuation_ids[:1], continuation_ids[1:]
            else:
                context_ids = [prefix]
        else:
            # Trailing spaces of the context belong to the continuation's first word.
            spaces = len(context) - len(context.rstrip())
            if spaces:
                context, continuation = context[:-spaces], context[-spaces:] + continuation
            whole = self._encode(context + continuation)
            context_ids = self._encode(context)
            continuation_ids = whole[len(context_ids):]
        if not continuation_ids:
            raise ValueError(f"loglikelihood request {index}: continuation {request.continuation!r} adds no tokens "
                             f"after context ending {request.context[-40:]!r}")
        if len(continuation_ids) > self.max_length:
            raise ValueError(f"loglikelihood request {index}: continuation is {len(continuation_ids)} tokens, longer "
                             f"than the {self.max_length} the model can see")
        return context_ids, continuation_ids

    def _continuation_logprobs(self, contexts: list[tuple[int, ...]],
                               wanted: list[tuple[int, list[int]]]) -> list[torch.Tensor]:
        """Log-probabilities (continuation length x vocab) predicting each wanted continuation of
        ``contexts[row]``. The contexts run once, right-padded as in the harness (padding after a
        causal row's tokens never reaches them), and each one's last position predicts the first
        token of all its continuations; longer continuations then run through the contexts' cache.
        """
        import torch

        width = max(len(c) for c in contexts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([list(c) + [pad] * (width - len(c)) for c in contexts], device=self.device)
        last = [len(c) - 1 for c in contexts]
        longer = [k for k, (_, continuation) in enumerate(wanted) if len(continuation) > 1]
        if self._keeps_logits:  # the LM head runs on each row's last position only
            kept = sorted(set(last))
            output = self.model(input_ids=input_ids, use_cache=bool(longer),
                                logits_to_keep=torch.tensor(kept, device=self.device))
            column = [kept.index(position) for position in last]
        else:
            output = self.model(input_ids=input_ids, use_cache=bool(longer))
            column = last
        rows_of_contexts = torch.arange(len(contexts), device=self.device)
        first = torch.log_softmax(output.logits[rows_of_contexts, column].float(), dim=-1)
        scored = [first[row].unsqueeze(0) for row, _ in wanted]
        # Continuations that differ only in their last token ("B" and "C" after a shared " ") feed
        # the model the same tail: it runs once.
        tails = list(dict.fromkeys((wanted[k][0], tuple(wanted[k][1][:-1])) for k in longer))
        if tails:
            rows = torch.tensor([row for row, _ in tails], device=self.device)
            cache = self._cache_of(output)
            cache.batch_select_indices(rows)
            tail_width = max(len(t) for _, t in tails)
            tail_ids = torch.tensor([list(t) + [pad] * (tail_width - len(t)) for _, t in tails], device=self.device)
            lengths = [len(contexts[row]) for row, _ in tails]
            # The cached padding sits between each context and its tail: the mask hides it.
            mask = torch.tensor([[1] * n + [0] * (width - n) + [1] * len(t) + [0] * (tail_width - len(t))
                                 for n, (_, t) in zip(lengths, tails, strict=True)], device=self.device)
            positions = torch.tensor(lengths, device=self.device).unsqueeze(1) + torch.arange(tail_width,
                                                                                             device=self.device)
            output = self.model(input_ids=tail_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                **{self._cache_argument: cache})
            rest = torch.log_softmax(output.logits.float(), dim=-1)
            tail_row = {tail: n for n, tail in enumerate(tails)}
            for k in longer:
                row, continuation = wanted[k]
                scored[k] = torch.cat([scored[k], rest[tail_row[row, tuple(continuation[:-1])], :len(continuation) - 1]])
        return scored


class _Sampler:
    """The next token of every row of a batch at once: the argmax for greedy rows, else an inverse-CDF
    draw from the row's (temperature-scaled, top-p-filtered) distribution with the row's own pre-drawn
    uniform for this step, so a seeded row samples the same tokens alone or in any batch."""

    def __init__(self, active: list[_Prepared], device: str) -> None:
        import torch

        sampled = [p.uniforms is not None for p in active]
        self.any_sampled = any(sampled)
        if not self.any_sampled:
            return
        self.greedy = torch.tensor([not s for s in sampled], device=device)
        self.all_sampled = all(sampled)
        self.temperature = torch.tensor([p.temperature if s else 1.0 for p, s in zip(active, sampled, strict=True)],
                                        device=device).unsqueeze(1)
        # top_p 1 keeps every token: an infinite threshold, so float error in the cumulative sum drops none.
        self.top_p = torch.tensor([p.top_p if s and p.top_p < 1.0 else math.inf
                                   for p, s in zip(active, sampled, strict=True)], device=device).unsqueeze(1)
        self.nucleus = any(s and p.top_p < 1.0 for p, s in zip(active, sampled, strict=True))
        longest = max(p.max_new_tokens for p in active)
        self.uniforms = torch.zeros(len(active), longest, device=device)
        for row, p in enumerate(active):
            if p.uniforms is not None:
                self.uniforms[row, :p.max_new_tokens] = p.uniforms[:p.max_new_tokens]

    def keep(self, rows: torch.Tensor) -> None:
        if self.any_sampled:
            self.greedy, self.temperature, self.top_p, self.uniforms = (
                self.greedy[rows], self.temperature[rows], self.top_p[rows], self.uniforms[rows])

    def choose(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        import torch

        if not self.any_sampled:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.nucleus:
            # The smallest set of most likely tokens whose mass reaches top_p; the rest get probability 0.
            sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
            probs = probs.masked_fill(torch.zeros_like(outside).scatter(1, sorted_ids, outside), 0.0)
        cdf = probs.cumsum(-1)
        target = self.uniforms[:, step:step + 1] * cdf[:, -1:]
        chosen = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)
        if self.all_sampled:
            return chosen
        return torch.where(self.greedy, logits.argmax(dim=-1), chosen)


def recorded_renderer(checkpoint: Path) -> str | None:
    """The chat format its training run used, from the run's ``recipe.yaml`` (the checkpoint lives in
    ``<run>/train/final``), resolving ``auto`` as the training pipeline does."""
    import yaml

    for folder in (checkpoint, *list(checkpoint.parents)[:2]):
        recipe = folder / "recipe.yaml"
        if recipe.exists():
            data = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
            name = data.get("renderer", "auto")
            if name == "auto":
                name = (data.get("base_model") or {}).get("name_or_path") or "chatml"
            return name
    return None


def derived_renderer(checkpoint: Path, config: Any) -> str | None:
    """A renderer named by the checkpoint folder or the model it was loaded from, if any is known."""
    from crucible.train.renderers import renderer_name_for

    for candidate in (checkpoint.name, Path(getattr(config, "_name_or_path", "") or "").name):
        if not candidate:
            continue
        try:
            return renderer_name_for(candidate)
        except ValueError:
            continue
    return None
