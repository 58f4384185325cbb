"""Layers, losses and optimizers for training CNNs on NumPy arrays, with PyTorch's names.

Each layer's forward runs a convolab op through :func:`convolab.vjp` and keeps the
pullback; ``backward(grad_output)`` returns the input gradient and accumulates the
parameter gradients in ``.grad``. A training step reads as in PyTorch, with the
backward pass written out::

    logits = net(images)
    loss = loss_fn(logits, labels)
    optimizer.zero_grad()
    net.backward(loss_fn.backward())
    optimizer.step()

>>> import numpy as np
>>> from convolab import nn
>>> nn.manual_seed(0)  # doctest: +ELLIPSIS
Generator(PCG64) at 0x...
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))
>>> net(np.zeros((5, 1, 4, 4), np.float32)).shape
(5, 3)
"""

from . import functional, init
from ._check import gradcheck
from .init import manual_seed
from .layers import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    ReLU,
    Sigmoid,
    Tanh,
)
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential, VjpModule
from .optim import SGD, Adam, AdamW, CosineAnnealingLR, Optimizer, StepLR

__all__ = [
    "functional", "init", "gradcheck", "manual_seed",
    "Module", "Parameter", "Sequential", "VjpModule",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Dropout", "Flatten", "Linear",
    "CrossEntropyLoss", "MSELoss",
    "Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR",
]
