"""Lightning DDP on two CPU processes: val_miou equals the single-process figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("torchmetrics")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning.pytorch as pl
    import torch
    from suimseg.lightning import SUIMDataModule, SUIMSegModule

    root, out, devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(0)
    module = SUIMSegModule({"encoder": "resnet18", "decoder_channels": [16, 8, 8, 8],
                            "bridge_channels": 16})
    data = SUIMDataModule(root, image_size=32, batch_size=2, val_fraction=0.4)
    trainer = pl.Trainer(accelerator="cpu", devices=devices,
                         strategy="ddp" if devices > 1 else "auto", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    [result] = trainer.validate(module, datamodule=data, verbose=False)
    result["sampler"] = type(trainer.val_dataloaders.sampler).__name__
    result["local"] = len(trainer.val_dataloaders.sampler)
    result["n_val"] = len(data.val_set)
    with open(f"{out}/devices{devices}-rank{trainer.global_rank}.json", "w") as fh:
        json.dump(result, fh)
    """
)


@pytest.mark.slow
def test_ddp_val_miou_equals_single_process(tmp_path: Path) -> None:
    from suimseg.data import make_synthetic_suim

    root = make_synthetic_suim(tmp_path / "data", n_train_val=14, n_test=2, size=(48, 40))
    script = tmp_path / "validate.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    for devices in (1, 2):
        subprocess.run(
            [sys.executable, str(script), str(root), str(tmp_path), str(devices)],
            check=True, cwd=tmp_path, env=env, timeout=600,
        )  # fmt: skip
    single = json.loads((tmp_path / "devices1-rank0.json").read_text())
    ranks = [json.loads((tmp_path / f"devices2-rank{r}.json").read_text()) for r in (0, 1)]
    # 5 images: a padding DistributedSampler would score one twice; here the ranks get 3 and
    # 2 images (2 and 1 batches: the uneven batch counts must not hang).
    assert single["n_val"] == 5
    for r in ranks:
        assert r["sampler"] == "UnpaddedDistributedSampler"  # Lightning kept ours
        assert r["val_miou"] == pytest.approx(single["val_miou"], abs=1e-6)
    assert ranks[0]["local"] + ranks[1]["local"] == single["n_val"]
