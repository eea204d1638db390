"""The realistic built-in models, small enough that a CPU sweep takes seconds: ``resnet`` (a
ResNet with batch norm for ``(C, H, W)`` images, as people train on CIFAR) and ``gpt`` (a
causal transformer over token ids, as in nanoGPT). ``harness.workload.models`` builds them by name."""

from __future__ import annotations

import torch
from torch import nn

RESNET_WIDTHS = (8, 16, 32)
"""Channels of the three stages (one basic block each; the last two halve the resolution)."""

GPT_WIDTH, GPT_LAYERS, GPT_HEADS = 64, 2, 4


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the input (projected where the shape changes), then relu."""

    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], n_outputs: int, widths: tuple[int, ...] = RESNET_WIDTHS):
        super().__init__()
        channels = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, width = [], widths[0]
        for n, out in enumerate(widths):
            blocks.append(BasicBlock(width, out, 1 if n == 0 else 2))
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class GPT(nn.Module):
    """Token and position embeddings, pre-norm causal self-attention blocks, a linear head:
    ``(B, T)`` ids to ``(B, T, vocab)`` logits."""

    def __init__(self, context: int, vocab: int, width: int = GPT_WIDTH, layers: int = GPT_LAYERS, heads: int = GPT_HEADS):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", torch.triu(torch.full((context, context), float("-inf")), diagonal=1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        h = self.tokens(x) + self.positions(torch.arange(length, device=x.device))
        h = self.blocks(h, mask=self.mask[:length, :length], is_causal=True)
        return self.head(self.norm(h))
