"""CLI: ``python -m attribution {ig,labels,report,relabel,analyze} --config recipes/<model>/<method>.yaml [--key value ...]``.

- ``ig``: integrated gradients for every trace (resumable; ``accelerate launch -m attribution ig`` shards it).
- ``labels``: selection -> the labels dataset (``labels_dir``) and its summary table.
- ``report``: plots and the HTML viewer of a labels run.
- ``relabel --from DIR``: the labels dataset in DIR, rebuilt for the recipe's model's tokenizer from its
  portable ``messages`` form, into the recipe's ``labels_dir``.
- ``analyze``: the paper's Sec. 3 analyses on the attribution run, into ``<run_dir>/analysis``.
"""
from __future__ import annotations

import sys

COMMANDS = ("ig", "labels", "report", "relabel", "analyze")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    command, rest = argv[0], argv[1:]
    if command == "relabel" and "-h" not in rest and "--help" not in rest:
        if "--from" not in rest:
            sys.exit("relabel needs --from LABELS_DIR (a labels folder made with another tokenizer)")
        at = rest.index("--from")
        source, rest = rest[at + 1], rest[:at] + rest[at + 2 :]
    from common.config import SELECTORS
    from common.dist import close_process_group
    from common.recipe import parse_recipe
    from data.loaders import load_trace_records

    r = parse_recipe(rest)  # --help prints the recipe keys and exits here
    if command == "relabel":
        from common.modeling import load_tokenizer

        from .labels import relabel_dataset

        tok = load_tokenizer(r.model.model_name_or_path, r.traces.chat_template, r.training.think_tokens)
        print(relabel_dataset(tok, source, r.selection.labels_dir, r.sft.max_length, r.training.think_prefix).table())
        return close_process_group()
    records, load = load_trace_records(r.traces)
    if command == "ig":
        from .runner import run

        run(r.traces, r.attribution, r.model, records, load=load)
    elif command == "labels":
        from common.modeling import load_tokenizer

        from .attributions import finished, load_attributions
        from .labels import write_labels

        tok = load_tokenizer(r.model.model_name_or_path, r.traces.chat_template, r.training.think_tokens)
        # with an attribution run every selector (full CoT too) drops the records it skipped: same records
        needed = SELECTORS[r.selection.selector] is not None
        ran = finished(r.attribution.attribution_dir)
        attributions = load_attributions(r.attribution.attribution_dir) if needed or ran else None
        write_labels(tok, records, attributions, r, load, " ".join(["python -m attribution", *argv]))
    elif command == "analyze":
        from common.modeling import MissingModel

        from .analyze import analyze

        try:
            analyze(r, records)
        except MissingModel as e:
            sys.exit(f"analyze: {e}")
        print(f"analysis: {r.analysis.analysis_dir}/report.md")
    else:
        from .report import write_report

        print(f"report: {write_report(r.selection, r.attribution.attribution_dir, records)}")
    close_process_group()


if __name__ == "__main__":
    main()
