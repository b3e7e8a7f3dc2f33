"""Distributed data-parallel training with torchrun and the reference Trainer.

DDP is explicit: the script initialises the process group from torchrun's environment
(NCCL on CUDA, gloo on CPU), shards the loaders with ``shard_loader`` and, on GPUs,
converts BatchNorm to SyncBatchNorm; the Trainer sees the process group, wraps the model
in DistributedDataParallel and all-reduces losses and metrics. Run as plain ``python`` it
trains in one process.

Small settings (the default): two CPU processes with gloo on a tiny synthetic dataset, a
few seconds:

    python -m torch.distributed.run --standalone --nproc_per_node=2 examples/ddp_torchrun.py

The small run shows the wiring, not learning (two epochs of a tiny model; see
``examples/trainer.py`` for a run that learns). Checkpoints and history go to ``--out``
(default ``./suimseg-examples/ddp_torchrun``); the synthetic data lives in a temporary
folder that rank 0 removes at the end.

Full scale on one machine with 4 GPUs (batch 6 per GPU, the V3 recipe):

    torchrun --standalone --nproc_per_node=4 examples/ddp_torchrun.py \
        --data SUIM --full --out runs/v3-ddp

Two machines with 8 GPUs each (run on both; node_rank 0 and 1; host0 reachable by both;
SUIM and --out on a shared file system):

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \
        --rdzv_endpoint=host0:29500 examples/ddp_torchrun.py --data /shared/SUIM --full \
        --out /shared/runs/v3-ddp
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from suimseg import (
    DiceFocalLoss,
    SUIMDataset,
    Trainer,
    UNetResAttnV3,
    make_synthetic_suim,
    param_groups,
)
from suimseg.engine import default_callbacks, reduce_on_plateau, shard_loader
from suimseg.engine.distributed import (
    destroy_distributed,
    get_rank,
    get_world_size,
    init_distributed,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="DDP training with torchrun (gloo on CPU, NCCL on CUDA).",
        epilog="Full scale: torchrun --standalone --nproc_per_node=4 examples/ddp_torchrun.py "
        "--data SUIM --full --out runs/v3-ddp",
    )
    parser.add_argument("--data", type=Path, help="SUIM root (default: synthetic data)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("suimseg-examples/ddp_torchrun"),
        help="checkpoint folder, shared by all ranks (default: ./suimseg-examples/ddp_torchrun)",
    )
    parser.add_argument("--full", action="store_true", help="the V3 recipe's sizes")
    parser.add_argument("--epochs", type=int, help="default 2 (50 with --full)")
    parser.add_argument("--image-size", type=int, help="default 64 (384 with --full)")
    parser.add_argument("--batch-size", type=int, help="per process; default 2 (6 with --full)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    parser.add_argument(
        "--overwrite", action="store_true", help="start a new run over an earlier one in --out"
    )
    return parser.parse_args(argv)


def broadcast_path(path: Path | None) -> Path:
    """Rank 0's path, on every rank (ranks must agree on shared folders)."""
    holder = [str(path) if path is not None else ""]
    if dist.is_initialized():
        dist.broadcast_object_list(holder, src=0)
    return Path(holder[0])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    full = args.full
    epochs = args.epochs or (50 if full else 2)
    size = args.image_size or (384 if full else 64)
    batch_size = args.batch_size or (6 if full else 2)
    on_gpu = torch.cuda.is_available() and full
    device = "cuda" if on_gpu else "cpu"

    # The caller owns the process group (the Trainer never initialises one); doing it
    # first also lets rank 0 prepare shared files before the others read them.
    init_distributed(device)
    rank, world = get_rank(), get_world_size()
    torch.manual_seed(0)  # every rank builds the same initial weights

    root = args.data
    scratch = None  # rank 0's temporary folder for the synthetic data
    if root is None and rank == 0:
        scratch = Path(tempfile.mkdtemp(prefix="suimseg-"))
        root = make_synthetic_suim(scratch / "suim-synth", n_train_val=12, n_test=4, size=(96, 72))
    root = broadcast_path(root)  # a barrier too: the data exists before anyone reads it
    out = broadcast_path(args.out.resolve() if rank == 0 else None)
    if rank == 0:
        print(f"output folder: {out}")

    train_set = SUIMDataset(root, "train", image_size=size)
    val_set = SUIMDataset(root, "val", image_size=size)
    # Sharded loaders: the training loader gets a DistributedSampler (reshuffled each epoch)
    # and the validation loader a ShardSampler (no padding, exact mIoU). Unchanged in a
    # single process.
    train_loader = shard_loader(
        DataLoader(
            train_set, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=args.workers
        ),
        train=True,
        seed=0,
    )
    val_loader = shard_loader(
        DataLoader(val_set, batch_size=batch_size, num_workers=args.workers), train=False
    )

    if full:
        model = UNetResAttnV3(encoder_weights="imagenet")
        lr, enc_lr_mult = 1e-4, 0.1
    else:
        model = UNetResAttnV3(
            encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16
        )
        lr, enc_lr_mult = 1e-3, 1.0
    if on_gpu and world > 1:  # small per-GPU batches: synchronise BatchNorm statistics
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(param_groups(model, enc_lr_mult, lr=lr, weight_decay=1e-4))
    trainer = Trainer(
        model,
        DiceFocalLoss(),
        optimizer,
        scheduler=reduce_on_plateau(optimizer),
        device=device,  # under torchrun with CUDA each process takes cuda:LOCAL_RANK
        amp="bf16" if on_gpu else None,
        channels_last=on_gpu,
        # Checkpoints and history in `out` (only rank 0 writes); RankSeed(0) gives each
        # rank its own augmentation stream.
        callbacks=default_callbacks(out, overwrite=args.overwrite, progress=False, seed=0),
    )
    history = trainer.fit(train_loader, val_loader, epochs=epochs)
    if rank == 0:
        print(
            f"world size {world} (LOCAL_RANK {os.environ.get('LOCAL_RANK', '0')}), "
            f"{len(history)} epochs, best val mIoU {100 * (trainer.best_metric or 0):.2f}%, "
            f"checkpoints in {out}"
        )
    destroy_distributed()  # barrier, then tear the process group down
    if scratch is not None:  # every rank is done with the data
        shutil.rmtree(scratch, ignore_errors=True)
    if rank == 0:
        print(f"output folder: {out}")


if __name__ == "__main__":
    main()
