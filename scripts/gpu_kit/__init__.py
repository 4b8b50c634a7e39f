"""The GPU kit: carry to an air-gapped CUDA box only what it lacks, in as few <= 60 MiB transfers as the
wheels allow, and prove the repo's CUDA half there in one run whose every part has its own time limit.

- :mod:`.wheels`: what travels: the box's package list, the lock file (lock, fetch);
- :mod:`.checks`: what runs on the box: the parts, each under its time limit (install, run);
- :mod:`.plan`: the dry run: the transfers, the modules the checks import, every check and why it skips;
- :mod:`.rehearse`: the install part, here, against a box-like CPython 3.12 venv.

`python -m scripts.gpu_kit --help` (the CLI); scripts/wheelhouse.sh and scripts/gpu_check.sh call it.
"""
