"""End multi-process runs cleanly (torchrun / accelerate launch)."""
from __future__ import annotations


def close_process_group() -> None:
    """Wait for every rank, then destroy the process group; a no-op in a single process.

    A rank that exits while another is still writing (the main rank saves the model) would tear
    down gloo under it and abort with SIGABRT.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
