"""The quickstart through every stage on a tiny random model and a few synthetic traces (CPU, ~1 min)."""
import json

import datasets
from transformers import AutoModelForCausalLM

from selective_sft.quickstart import DEFAULT_RECIPE, run


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
    assert set(out["times"]) == {"data", "attribution", "labels_selective", "labels_full_cot", "train_selective",
                                 "train_full_cot", "eval_selective", "eval_full_cot"}
    # a rerun skips every finished stage
    again = run(str(DEFAULT_RECIPE), str(tmp_path), ["--model_name_or_path", "tiny-qwen2",
                "--num_train_epochs", "1", "--eval_max_new_tokens", "8", "--ig_steps", "4"], n_train=6, n_eval=4)
    assert again["times"] == {} and json.loads((tmp_path / "attribution.done").read_text())["attributed"] == 6
