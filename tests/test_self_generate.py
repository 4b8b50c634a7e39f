"""Self-generated CoT: the shortest correct candidate becomes the trace; resumable; misses are listed."""
import json

from data.records import Record
from eval.grading import Grader
from eval.self_generate import self_generate, split_response


class FakeGenerator:
    """Returns scripted candidates per question and counts the prompts it was asked for."""

    def __init__(self, script):
        self.script, self.calls = script, 0

    def __call__(self, prompts, s):
        self.calls += len(prompts)
        return [self.script[p.split("user\n", 1)[1].split("\n", 1)[0]] for p in prompts]


def test_shortest_correct_kept_and_resume(tmp_path, tiny_tok):
    qs = [Record("q1", "What is 2+2?", "-", "4"), Record("q2", "What is 3+3?", "-", "6")]
    script = {
        "What is 2+2?": [("long thinking... </think> \\boxed{4}", 30), ("think</think>\\boxed{5}", 5),
                         ("short</think> so \\boxed{4}", 10)],
        "What is 3+3?": [("\\boxed{7}", 3), ("\\boxed{8}", 4), ("\\boxed{9}", 2)],
    }
    gen = FakeGenerator(script)
    with Grader() as g:
        summary = self_generate(qs, gen, g, tmp_path, tiny_tok, n=3, batch_size=1)
        assert summary["with_correct"] == 1 and summary["no_correct"] == ["q2"] and gen.calls == 2
        rows = [json.loads(x) for x in (tmp_path / "traces.jsonl").read_text().split("\n") if x]
        # the whole response is kept: the thinking as the trace, the rest (</think> and the answer) as completion
        assert rows[0]["trace"] == "short" and rows[0]["completion"] == "</think> so \\boxed{4}"
        assert rows[0]["meta"]["shortest_incorrect"] == "think</think>\\boxed{5}"
        again = self_generate(qs, gen, g, tmp_path, tiny_tok, n=3, batch_size=1)
    assert gen.calls == 2 and again == summary  # nothing regenerated


def test_split_response():
    assert split_response("a\nb\n</think>\n\nfinal") == ("a\nb", "final")
    assert split_response("no close") == ("no close", "")
