"""The toy student built for real, with a short SFT warm-up: it lands in the cache directory and
the store, a second call builds nothing (from the cache, or from the store on a fresh machine),
and the result loads and talks in the toy's prompt format."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlkd.store import LocalStore
from rlkd.toy import TOY_SYSTEM_PROMPT, Recipe, refs, toy_model

pytest.importorskip("transformers")

SHORT = Recipe(sft_steps=3, batch_size=4, sft_problems=50, tokenizer_problems=50)


class CountingStore(LocalStore):
    """A local store that counts downloads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.downloads = 0

    def get_file(self, key: str, path: str | Path) -> None:
        self.downloads += 1
        super().get_file(key, path)


def test_the_student_is_built_once_then_read_from_the_cache_or_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[Path] = []
    build = refs._BUILDERS["tiny-student"]

    def counted(path: Path, recipe: Recipe) -> Path:
        builds.append(path)
        return build(path, recipe, progress=False)

    monkeypatch.setitem(refs._BUILDERS, "tiny-student", counted)
    store = CountingStore(tmp_path / "store")

    first = toy_model("tiny-student", store, tmp_path / "node-a", recipe=SHORT)
    assert len(builds) == 1 and store.downloads == 0
    assert (first / "config.json").is_file() and first.parent == tmp_path / "node-a"
    keys = store.list("toy/models/")
    prefix = keys[0].rpartition("/")[0] + "/"
    assert prefix.startswith("toy/models/tiny-student-")
    files = store.get_json(prefix + "manifest.json")["files"]
    assert sorted(prefix + f for f in [*files, "manifest.json"]) == keys
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert [p.name for p in (tmp_path / "node-a").iterdir() if not p.name.endswith(".lock")] == [
        first.name
    ]  # no staging directory left behind

    assert toy_model("tiny-student", store, tmp_path / "node-a", recipe=SHORT) == first
    assert len(builds) == 1 and store.downloads == 0  # from the cache directory

    second = toy_model("tiny-student", store, tmp_path / "node-b", recipe=SHORT)
    assert len(builds) == 1 and store.downloads == len(keys) - 1  # from the store
    assert sorted(p.name for p in second.iterdir()) == sorted(p.name for p in first.iterdir())
    assert (second / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()

    # Without a store every fresh cache directory builds.
    toy_model("tiny-student", None, tmp_path / "node-c", recipe=SHORT)
    assert len(builds) == 2


def test_the_build_is_deterministic_and_the_student_answers_in_the_prompt_format(
    tmp_path: Path,
) -> None:
    import torch
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2ForCausalLM

    a = toy_model("tiny-student", None, tmp_path / "a", recipe=SHORT)
    b = toy_model("tiny-student", None, tmp_path / "b", recipe=SHORT)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()

    tokenizer = PreTrainedTokenizerFast.from_pretrained(a)
    assert type(AutoTokenizer.from_pretrained(a)).__name__ == "Qwen2Tokenizer"
    model = Qwen2ForCausalLM.from_pretrained(a)
    prompt = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": TOY_SYSTEM_PROMPT},
            {"role": "user", "content": "Compute (4+5)+(7-2)."},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 8 or out[0, -1] == tokenizer.eos_token_id


def test_two_processes_asking_at_once_get_one_build(tmp_path: Path) -> None:
    """The ranks of one node ask together: one builds, the other waits for it and reuses it."""
    import subprocess
    import sys

    code = (
        "import logging, sys; from pathlib import Path; "
        "logging.basicConfig(level=logging.INFO); "
        "from rlkd.toy import Recipe, toy_model; "
        "r = Recipe(sft_steps=3, batch_size=4, sft_problems=50, tokenizer_problems=50); "
        "print(toy_model('tiny-student', None, Path(sys.argv[1]), recipe=r))"
    )
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "cache")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [rank.communicate(timeout=300) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0]
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(paths) == 1 and Path(paths.pop(), "model.safetensors").is_file()
    assert sum(err.count("built tiny-student-") for _, err in outputs) == 1
