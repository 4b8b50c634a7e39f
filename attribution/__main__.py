"""CLI: ``python -m attribution {ig,labels,report} --config recipes/<model>/<method>.yaml [--key value ...]``.

- ``ig``: integrated gradients for every trace (resumable; ``accelerate launch -m attribution ig`` shards it).
- ``labels``: selection -> the labels dataset (``labels_dir/dataset``) and its summary table.
- ``report``: plots and the HTML viewer of a labels run.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("ig", "labels", "report"):
        sys.exit(__doc__)
    command, rest = argv[0], argv[1:]
    from selective_sft.config import parse_recipe
    from selective_sft.dist import close_process_group

    args, sft, model_args = parse_recipe(rest)
    if command == "ig":
        from .runner import run

        run(args, model_args)
    elif command == "labels":
        from selective_sft.modeling import load_tokenizer

        from .labels import write_recipe_labels
        from .runner import load_attributions, load_trace_records
        from .selection import NEEDS_FEATURE, NEEDS_IG

        tok = load_tokenizer(model_args.model_name_or_path, args.chat_template)
        needs = args.selector in NEEDS_IG or args.selector in NEEDS_FEATURE
        attributions = load_attributions(args.attribution_dir) if needs else None
        write_recipe_labels(args, tok, load_trace_records(args), attributions, sft.max_length)
    else:
        from .report import write_report
        from .runner import load_trace_records

        print(f"report: {write_report(args.labels_dir, args.attribution_dir, load_trace_records(args))}")
    close_process_group()


if __name__ == "__main__":
    main()
