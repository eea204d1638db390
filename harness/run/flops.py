"""FLOPs of a training step and the peak they are measured against (MFU).

``step_flops`` counts one forward + backward on a copy of the model, once per point and
untimed, with ``torch.utils.flop_counter`` (matmuls and convolutions, the dense work; the
optimizer's element-wise update is not counted, as in the usual 6 x parameters x tokens). For
an MLP that is about 6 x B x (sum over layers of in x out); the first layer's input gradient,
never computed, is the difference.

``PEAK_TFLOPS``: dense (no sparsity) peaks from the vendors' data sheets, by a substring of the
device name and the point's precision. Where the device is not in the table (and always on the
CPU) MFU is null unless ``--peak-tflops`` gives the number.
"""

from __future__ import annotations

from typing import Callable

import torch

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # name substring: {precision: dense TFLOPS}; the first match wins, so specific names first
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
    "V100": {"fp32": 15.7, "fp16": 125.0},
    "T4": {"fp32": 8.1, "fp16": 65.0},
}


def peak_tflops(device_name: str | None, precision: str, given: float | None = None) -> float | None:
    """The dense peak to divide by: ``given`` (``--peak-tflops``), else the table's, else None."""
    if given is not None:
        return given
    if not device_name:
        return None
    for key, peaks in PEAK_TFLOPS.items():
        if key in device_name:
            return peaks.get(precision)
    return None


def compile_now(compiled: torch.nn.Module, loss_fn: Callable, xb: torch.Tensor, yb: torch.Tensor, autocast=None, scaler=None) -> float:
    """Compile a ``torch.compile``d model before training: one forward + backward in train
    mode on a training batch (the shapes the loop will use), the RNG forked and the gradients
    dropped; returns the seconds it took (``compile_s``). A batch of another size later (the
    last of an epoch) may still recompile, inside the burn-in or a measured step."""
    import time

    devices = [xb.device] if xb.device.type == "cuda" else []
    buffers = {name: b.detach().clone() for name, b in compiled.named_buffers()}  # batch-norm statistics
    start = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        if autocast is None:
            loss = loss_fn(compiled(xb), yb)
        else:
            with autocast():
                loss = loss_fn(compiled(xb), yb)
        (loss if scaler is None else scaler.scale(loss)).backward()
    if xb.device.type == "cuda":
        torch.cuda.synchronize(xb.device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for name, b in compiled.named_buffers():
            b.copy_(buffers[name])
    for param in compiled.parameters():
        param.grad = None
    return seconds


def step_flops(model: torch.nn.Module, loss_fn: Callable, xb: torch.Tensor, yb: torch.Tensor, autocast=None) -> int | None:
    """FLOPs of one forward + backward of ``model`` on this batch, counted before training: in
    eval mode (batch-norm statistics untouched, the same dense work), the RNG forked, the
    gradients dropped after, so training starts as if it had not run. None where it cannot count."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    devices = [xb.device] if xb.device.type == "cuda" else []
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False) as counter:
            if autocast is None:
                loss = loss_fn(model(xb), yb)
            else:
                with autocast():
                    loss = loss_fn(model(xb), yb)
            loss.backward()
        return int(counter.get_total_flops())
    except Exception:  # a model the counter cannot handle: no number
        return None
    finally:
        model.train(was_training)
        for param in model.parameters():
            param.grad = None
