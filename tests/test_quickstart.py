"""The quickstart through every stage on a tiny random model and a few synthetic traces (CPU, ~1 min)."""
import json

import datasets
from transformers import AutoModelForCausalLM

from pipelines.quickstart import DEFAULT_RECIPE, run


def test_quickstart_every_stage(tmp_path):
    out = run(str(DEFAULT_RECIPE), str(tmp_path), ["--model_name_or_path", "tiny-qwen2",
              "--num_train_epochs", "1", "--eval_max_new_tokens", "8", "--ig_steps", "4"], n_train=6, n_eval=4)
    # folders by the run-folder rule: labels/<selector>, models/<selector>, eval/<selector>
    ds = datasets.load_dataset(str(tmp_path / "labels" / "paper"), split="train")
    assert len(ds) == 6 and {"input_ids", "labels", "selected"} <= set(ds.column_names)
    full = datasets.load_dataset(str(tmp_path / "labels" / "all"), split="train")
    assert all(all(full[i]["selected"]) for i in range(len(full)))
    for name in ("paper", "all"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "models" / name)
    table = (tmp_path / "eval" / "table.md").read_text().strip().split("\n")
    assert table[2] == "| run | synthetic | avg | length |" and table[4].startswith("| all |")
    assert table[5].startswith("| paper |") and len(table) == 6  # greedy only: no sampling block
    results = (tmp_path / "results.md").read_text()
    assert "Planted redundancy" in results and "| paper |" in results
    assert (tmp_path / "labels" / "paper" / "report" / "viewer.html").exists()
    assert set(out["times"]) == {"data", "model", "attribution", "labels_selective", "labels_full_cot", "train_selective",
                                 "train_full_cot", "eval_selective", "eval_full_cot"}
    for section in ("95% Wilson interval", "exact McNemar p", "Redundancy the trained models write", "## Profile",
                    "6 traces, 24 points (ig_steps 4)", "IG completeness gap: median", "s per point", "s per step",
                    "ms per token"):
        assert section in results, section
    # a rerun skips every finished stage, and reports the times they took
    again = run(str(DEFAULT_RECIPE), str(tmp_path), ["--model_name_or_path", "tiny-qwen2",
                "--num_train_epochs", "1", "--eval_max_new_tokens", "8", "--ig_steps", "4"], n_train=6, n_eval=4)
    assert again["times"] == out["times"]
    assert json.loads((tmp_path / "attribution.done").read_text())["result"]["attributed"] == 6


def _samples(eval_dir, name, outcomes, tokens):
    from data.store import JsonlStore

    store = JsonlStore(eval_dir / name / "samples.jsonl", key="key")
    for i, (ok, n) in enumerate(zip(outcomes, tokens)):
        store.append({"key": f"synthetic|q{i}|greedy|0", "benchmark": "synthetic", "id": f"q{i}", "mode": "greedy",
                      "sample": 0, "response": "", "n_tokens": n, "correct": ok})


def test_accuracy_table_counts_intervals_and_pairs(tmp_path):
    """a solves q0, q1; b solves q1, q2, q3 of 4: 2/4 and 3/4 with their Wilson intervals; paired, only a
    solves 1 and only b 2, McNemar p = min(1, 2 (1 + 3) / 8) = 1; lengths 10, 20, 30, 40: mean 25 ± 6."""
    from pipelines.quickstart import accuracy_table, greedy_samples

    _samples(tmp_path, "a", [True, True, False, False], [10, 20, 30, 40])
    _samples(tmp_path, "b", [False, True, True, True], [10, 20, 30, 40])
    lines = accuracy_table(greedy_samples(str(tmp_path), ["a", "b"])).split("\n")
    assert lines[2] == "| a (synthetic) | 2/4 | 50.0% (15.0-85.0%) | 25 ± 6 |"
    assert lines[3] == "| b (synthetic) | 3/4 | 75.0% (30.1-95.4%) | 25 ± 6 |"
    assert lines[5] == ("Paired on the same 4 questions: only a solves 1, only b solves 2; exact McNemar p = 1.00 "
                        "(a difference needs p < 0.05).")
