"""Data pipelines as users write them, for tests/test_pipelines.py: map-style Datasets that
decode PNG files (written by the test into $BATCHBENCH_TEST_PNG_DIR) on every item."""

import os
import time
from pathlib import Path

import numpy as np
import torch

DECODE_FLOOR_S = 0.0005
"""Each item also busy-waits this long (a stand-in for a real image's decode and augmentation),
so the data phase has a known least cost: B items a batch, at least B x this."""


class PngFolder(torch.utils.data.Dataset):
    """<index>_<label>.png files: decoded with PIL, scaled to 0..1, CHW float32."""

    def __init__(self, folder, floor_s=DECODE_FLOOR_S, scale=True):
        self.files = sorted(Path(folder).glob("*.png"))
        self.labels = [int(f.stem.split("_")[1]) for f in self.files]
        self.classes = sorted(set(self.labels))
        self.floor_s, self.scale = floor_s, scale

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        end = time.perf_counter() + self.floor_s
        with Image.open(self.files[i]) as image:
            pixels = np.asarray(image.convert("RGB"))
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
        x = x.float() / 255 if self.scale else x
        while time.perf_counter() < end:
            pass
        return x, self.labels[i]


def png_folder():
    return PngFolder(os.environ["BATCHBENCH_TEST_PNG_DIR"])


def png_pair():
    """(train, check): the first 3/4 of the files to train on, the rest to check."""
    folder = Path(os.environ["BATCHBENCH_TEST_PNG_DIR"])
    full = PngFolder(folder)
    cut = len(full) * 3 // 4
    return torch.utils.data.Subset(full, range(cut)), torch.utils.data.Subset(full, range(cut, len(full)))


def png_bytes():
    """Forgot to scale: uint8 pixels."""
    return PngFolder(os.environ["BATCHBENCH_TEST_PNG_DIR"], floor_s=0.0, scale=False)


def not_a_dataset():
    return [1, 2, 3]
