"""Worker of the 2-process gloo test (imported by the spawned processes by module name)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist


def batches(n: int = 6, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random logits and labels (with ignored pixels); batch sizes differ on purpose."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        b = 1 + i % 3
        logits = torch.randn(b, 8, 12, 10, generator=g)
        target = torch.randint(0, 8, (b, 12, 10), generator=g)
        target[torch.rand(b, 12, 10, generator=g) < 0.1] = 255
        out.append((logits, target))
    return out


def run(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    from suimseg.lightning.metrics import SUIMJaccardIndex

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        metric = SUIMJaccardIndex(8)
        per_class = SUIMJaccardIndex(8, average="none")
        for logits, target in batches()[rank::world_size]:
            metric.update(logits, target)
            per_class.update(logits, target)
        result = {
            "miou": float(metric.compute()),
            "iou": per_class.compute().tolist(),
            "pixels": int(metric.segmentation_metrics().confusion.sum()),
            "local_pixels": int(metric.confmat.sum()),  # unsynced again after compute
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.barrier()
        dist.destroy_process_group()
