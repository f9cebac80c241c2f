"""Text metrics for evaluation: BLEU and ROUGE equal to sacrebleu and rouge-score, SQuAD
EM/F1, GSM8K answer extraction as lm-evaluation-harness does it, MMLU accuracy and pass@k."""

from crucible.data.metrics.answers import (
    exact_match,
    extract_gsm8k_answer,
    gsm8k_is_correct,
    mmlu_accuracy,
    normalize_answer,
    token_f1,
)
from crucible.data.metrics.bleu import BleuScore, corpus_bleu, sentence_bleu, tokenize_13a
from crucible.data.metrics.pass_at_k import unbiased_pass_at_k, unbiased_pass_at_k_array
from crucible.data.metrics.rouge_scores import (
    ROUGE_TYPES,
    RougeScore,
    lcs_length,
    rouge,
    rouge_summary,
    rouge_tokenize,
)

__all__ = [
    "ROUGE_TYPES",
    "BleuScore",
    "RougeScore",
    "corpus_bleu",
    "exact_match",
    "extract_gsm8k_answer",
    "gsm8k_is_correct",
    "lcs_length",
    "mmlu_accuracy",
    "normalize_answer",
    "rouge",
    "rouge_summary",
    "rouge_tokenize",
    "sentence_bleu",
    "token_f1",
    "tokenize_13a",
    "unbiased_pass_at_k",
    "unbiased_pass_at_k_array",
]
