"""Task accuracy of a policy (``laser eval``): load it (a Hub name, a folder, a GGUF file or a
LoRA adapter folder), answer greedily and judge each answer with ``Example.correct``, per group
and macro-averaged; and :func:`best_index`, the argmax over finite scores that ``laser bon``
(:mod:`laser.bon`) picks its responses with.
"""

from __future__ import annotations

import numpy as np

from laser.tasks.metrics import example_accuracy


def load_policy(
    model: str, gguf_file: str | None = None, chat_template: bool = False, device: str = "auto", dtype: str = "float32"
):
    """A Policy from a Hub name, a local folder, a GGUF file or a LoRA adapter folder."""
    from pathlib import Path

    from laser.config import PolicyConfig
    from laser.policy.model import Policy, load_model_and_tokenizer

    if (Path(model) / "adapter_config.json").exists():  # a LoRA adapter: load its base, then the adapter
        import json

        from peft import PeftModel

        info_file = Path(model) / "laser_policy.json"
        if info_file.exists():
            info = json.loads(info_file.read_text())
            base_name, base_gguf = info["model"], info.get("gguf_file")
        else:
            base_name = json.loads((Path(model) / "adapter_config.json").read_text())["base_model_name_or_path"]
            base_gguf = gguf_file
        cfg = PolicyConfig(model=base_name, gguf_file=base_gguf, device=device, dtype=dtype)
        base, tokenizer = load_model_and_tokenizer(cfg)
        return Policy(PeftModel.from_pretrained(base, model), tokenizer, chat_template=chat_template)
    cfg = PolicyConfig(model=model, gguf_file=gguf_file, device=device, dtype=dtype, chat_template=chat_template)
    return Policy(*load_model_and_tokenizer(cfg), chat_template=chat_template)


def evaluate_policy(
    policy, examples, max_new_tokens: int = 256, batch_size: int = 32, show_progress: bool = True
) -> dict:
    """Greedy accuracy per group (domain, else task) and their macro average.

    Returns:
        ``{"accuracy": {group: acc, ..., "average": acc}, "n": N, "correct": [bool per example]}``.
    """
    from tqdm.auto import tqdm

    texts = []
    for i in tqdm(range(0, len(examples), batch_size), desc="eval", disable=not show_progress):
        chunk = examples[i : i + batch_size]
        texts += policy.generate([ex.prompt for ex in chunk], max_new_tokens, batch_size=batch_size)
    scored = example_accuracy(examples, texts, sort_groups=True)  # Example.correct: the one correctness
    return {**scored, "n": len(examples), "responses": texts}


def best_index(scores: np.ndarray) -> int | None:
    """Index of the highest finite score (first on ties), None when nothing is scorable."""
    finite = np.isfinite(scores)
    return int(np.argmax(np.where(finite, scores, -np.inf))) if finite.any() else None
