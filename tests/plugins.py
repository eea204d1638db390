"""Plug-in models for the tests, loaded as ``tests/plugins.py:NAME`` like a user's file."""

import time

import torch
from torch import nn

FORWARD_COST_S = 0.004
FORWARD_DURATIONS_S: list[float] = []


def busy_wait(seconds: float) -> None:
    """Spin on the clock: a sleep would let the vCPU idle and slow the work after it."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class KnownCostForward(nn.Module):
    """A linear model whose training forward costs FORWARD_COST_S, timed by its own clock."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        if self.training:
            start = time.perf_counter()
            busy_wait(FORWARD_COST_S)
            out = self.linear(x)
            FORWARD_DURATIONS_S.append(time.perf_counter() - start)
            return out
        return self.linear(x)


def known_cost(n_features, n_outputs):
    return KnownCostForward(n_features, n_outputs)


class CostlyCheck(nn.Module):
    """A linear model whose evaluation (eval mode) costs 50 ms a call and training forward 5 ms:
    a check is worth ten steps, and 40 of them two seconds."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        busy_wait(0.005 if self.training else 0.05)
        return self.linear(x)


def costly_check(n_features, n_outputs):
    return CostlyCheck(n_features, n_outputs)


class Exploding(nn.Module):
    """Outputs that overflow after a few steps: the loss turns inf/NaN."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.linear(x)
        return out * (1e39 if self.calls > 20 else 1.0)


def exploding(n_features, n_outputs):
    return Exploding(n_features, n_outputs)


class RaisesOOM(nn.Module):
    """Raises CUDA's OutOfMemoryError (on any device) when the batch is large."""

    def __init__(self, n_features, n_outputs, limit=64):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)
        self.limit = limit

    def forward(self, x):
        if self.training and x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.linear(x)


def oom_above_64(n_features, n_outputs):
    return RaisesOOM(n_features, n_outputs)


class Broken(nn.Module):
    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        if self.training:
            raise ValueError("bug in user model")
        return self.linear(x)


def broken(n_features, n_outputs):
    return Broken(n_features, n_outputs)


class Slow(nn.Module):
    """A model slow enough (about 20 ms a step) that a test can kill a sweep midway."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        if self.training:
            busy_wait(0.02)
        return self.linear(x)


def slow(n_features, n_outputs):
    return Slow(n_features, n_outputs)


def not_a_module(n_features, n_outputs):
    return "nope"


def zero_linear(n_features, n_outputs):
    """A linear model starting at exactly zero: the noise-scale test's known state."""
    model = nn.Linear(n_features, n_outputs)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    return model


class WithBatchNorm(nn.Module):
    """Batch norm in training mode cannot be vmapped per example: the noise scale falls back."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, n_outputs))

    def forward(self, x):
        return self.net(x)


def with_batchnorm(n_features, n_outputs):
    return WithBatchNorm(n_features, n_outputs)


class FailsOnRank1(nn.Module):
    """Trains on rank 0; raises on rank 1 after a few steps (a failure in one rank)."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        import os

        self.linear = nn.Linear(n_features, n_outputs)
        self.rank = int(os.environ.get("RANK", "0"))
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.rank == 1 and self.calls > 3:
                raise RuntimeError("rank 1 lost its data")
        return self.linear(x)


def fails_on_rank_1(n_features, n_outputs):
    return FailsOnRank1(n_features, n_outputs)


class Hungry(nn.Module):
    """Asks the allocator for 64 GiB in a training forward: a CPU out-of-memory."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        if self.training:
            torch.empty(64 * 2**30, dtype=torch.uint8).fill_(1)
        return self.linear(x)


def hungry(n_features, n_outputs):
    return Hungry(n_features, n_outputs)


def three_extra_logits(n_features, n_outputs):
    """K + 3 outputs for K classes: cross-entropy would run, silently wrong."""
    return nn.Linear(n_features, n_outputs + 3)


def two_logits(n_features, n_outputs):
    """Two outputs whatever the data set needs."""
    return nn.Linear(n_features, 2)


class Steady(nn.Module):
    """A training forward that always costs 1 ms (a busy wait): the median is certain."""

    def __init__(self, n_features, n_outputs, choices=(0.001,)):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)
        self.choices = choices
        self.rng = __import__("random").Random(0)

    def forward(self, x):
        if self.training:
            busy_wait(self.rng.choice(self.choices))
        return self.linear(x)


def steady(n_features, n_outputs):
    return Steady(n_features, n_outputs)


def one_or_three_ms(n_features, n_outputs):
    """1 ms or 3 ms at random, half and half: the median itself is a coin toss."""
    return Steady(n_features, n_outputs, choices=(0.001, 0.003))


class EvalHog(nn.Module):
    """A linear model whose eval-mode forward holds a 1 GiB temporary: loss checks and the
    final evaluation peak high, training steps do not."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        out = self.linear(x)
        if not self.training:
            scratch = torch.ones(2**28, device=x.device)  # 1 GiB of float32, written
            out = out + scratch[:1].sum() * 0
        return out


def eval_hog(n_features, n_outputs):
    return EvalHog(n_features, n_outputs)


def plain_linear(n_features, n_outputs):
    return nn.Linear(n_features, n_outputs)


SPIN_S = 0.002
"""GPU time of the spin kernel in SpinForward's training forward."""


def spin_cycles(seconds: float) -> int:
    """``torch.cuda._sleep`` cycles for about ``seconds`` of GPU time, calibrated on this GPU
    (as torch's own tests do: time a long spin)."""
    calibration = 10_000_000
    return int(seconds * calibration / spin_seconds(calibration, repeats=5))


def spin_seconds(cycles: int, repeats: int = 21) -> float:
    """The spin's GPU time by an independent clock: synchronise, spin, synchronise."""
    import statistics

    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        torch.cuda._sleep(cycles)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


class SpinForward(nn.Module):
    """A linear model whose training forward also spins the GPU for a known time."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)
        self.cycles = spin_cycles(SPIN_S) if torch.cuda.is_available() else 0

    def forward(self, x):
        if self.training and x.is_cuda:
            torch.cuda._sleep(self.cycles)
        return self.linear(x)


def spin_forward(n_features, n_outputs):
    return SpinForward(n_features, n_outputs)


class CudaOOMAbove64(nn.Module):
    """Asks the CUDA allocator for far more than any GPU has when the batch exceeds 64."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        if self.training and x.shape[0] > 64:
            torch.empty(2**45, dtype=torch.uint8, device=x.device)
        return self.linear(x)


def cuda_oom_above_64(n_features, n_outputs):
    return CudaOOMAbove64(n_features, n_outputs)


def image_cnn(input_shape, n_outputs):
    """A CNN for (C, H, W) images: takes the per-sample shape, not the flat size."""
    channels = input_shape[0]
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, n_outputs))


class TokenMixer(nn.Module):
    """Embedding -> per-token MLP -> logits over the vocabulary: (B, T) ids to (B, T, V)."""

    def __init__(self, vocab: int, width: int = 32):
        super().__init__()
        self.embed, self.mix, self.out = nn.Embedding(vocab, width), nn.Linear(width, width), nn.Linear(width, vocab)

    def forward(self, x):
        return self.out(torch.relu(self.mix(self.embed(x))))


def token_model(n_outputs):
    """A (module, loss_fn) pair: the user's own loss, over every token."""

    def loss_fn(output, target):
        return torch.nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    return TokenMixer(n_outputs), loss_fn


class WideHeadConv(nn.Module):
    """A conv layer on (3, 32, 32) images and a wide fully connected head: 8.4 M parameters
    (their gradients besides) against about 0.2 MiB of activations a sample, so small batches'
    peaks are nearly all fixed memory, as with a ResNet-18."""

    def __init__(self, input_shape, n_outputs):
        super().__init__()
        channels, height, width = input_shape
        self.conv = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * height * width, 512), nn.ReLU(), nn.Linear(512, n_outputs))

    def forward(self, x):
        return self.head(self.conv(x))


def wide_head_conv(input_shape, n_outputs):
    return WideHeadConv(input_shape, n_outputs)


class ResidualBlock(nn.Module):
    def __init__(self, inputs, outputs, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(),
                                  nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False), nn.BatchNorm2d(outputs))
        self.shortcut = nn.Identity() if stride == 1 and inputs == outputs else nn.Sequential(
            nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18's layout (two basic blocks a stage, four stages) at a quarter of its widths: its
    peak memory is flat at small batches (the gradients' moment) and grows per sample after."""

    def __init__(self, input_shape, n_outputs, widths=(16, 32, 64, 128)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, width = [], widths[0]
        for n, out in enumerate(widths):
            blocks += [ResidualBlock(width, out, 1 if n == 0 else 2), ResidualBlock(out, out, 1)]
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def resnet18_quarter(input_shape, n_outputs):
    return ResNet18(input_shape, n_outputs)


def channels_last_conv(input_shape, n_outputs):
    """Expects channels last ((B, H, W, C)): on (B, C, H, W) images its first conv fails."""
    return nn.Sequential(nn.Conv2d(input_shape[-1], 8, 3), nn.Flatten(), nn.LazyLinear(n_outputs))


class ExitsInForward(nn.Module):
    """Calls sys.exit(0) while training, as a careless script might."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        if self.training:
            import sys

            sys.exit(0)
        return self.linear(x)


def exits_in_forward(n_features, n_outputs):
    return ExitsInForward(n_features, n_outputs)


class Meddles(nn.Module):
    """Changes the working directory and torch's thread count while training."""

    def __init__(self, n_features, n_outputs, folder):
        super().__init__()
        self.linear, self.folder = nn.Linear(n_features, n_outputs), folder

    def forward(self, x):
        if self.training:
            import os

            os.chdir(self.folder)
            torch.set_num_threads(2)
        return self.linear(x)


def meddles(n_features, n_outputs):
    import os

    return Meddles(n_features, n_outputs, os.environ.get("BATCHBENCH_TEST_ELSEWHERE", "/"))


class HangsAtB8(nn.Module):
    """Never returns from a training forward at batch size 8 (a deadlock in user code)."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        if self.training and x.shape[0] == 8:
            while True:
                pass
        return self.linear(x)


def hangs_at_b8(n_features, n_outputs):
    return HangsAtB8(n_features, n_outputs)


def float_loss(n_features, n_outputs):
    return nn.Linear(n_features, n_outputs), lambda out, target: 1.5


class SlowCheck(nn.Module):
    """A linear model whose evaluation (eval mode) costs ``BATCHBENCH_TEST_CHECK_S`` (default 20
    ms) a call and whose training forward costs 0.3 ms: a loss check worth about 60 steps, as on
    a real model. The cost changes no number: the reference run checks every step at no cost."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        import os

        busy_wait(0.0003 if self.training else float(os.environ.get("BATCHBENCH_TEST_CHECK_S", "0.02")))
        return self.linear(x)


def slow_check(n_features, n_outputs):
    return SlowCheck(n_features, n_outputs)


class DiesOnce(nn.Module):
    """A linear model whose process dies (SIGKILL) at its first training step where the file
    ``$BATCHBENCH_TEST_DIE_ONCE`` exists, removing it first: a worker lost mid-point, once."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        import os
        import signal

        marker = os.environ.get("BATCHBENCH_TEST_DIE_ONCE")
        if self.training and marker and os.path.exists(marker):
            os.remove(marker)
            os.kill(os.getpid(), signal.SIGKILL)
        return self.linear(x)


def dies_once(n_features, n_outputs):
    return DiesOnce(n_features, n_outputs)
