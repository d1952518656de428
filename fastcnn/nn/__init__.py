"""Layers, losses and containers with PyTorch's names, numpy in and out.

``m(x)`` runs a module forward and keeps what its backward needs;
``m.backward(grad_out)`` returns the gradient with respect to the input and
accumulates into every parameter's ``.grad``.
"""
from .module import Module, Parameter, Sequential
from .layers import (
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout,
    Flatten, Identity, LeakyReLU, Linear, LogSoftmax, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh,
    Unflatten, Upsample,
)
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss
from . import init  # noqa: F401  (fastcnn.nn.init, as torch.nn.init)

__all__ = [
    "Module", "Parameter", "Sequential",
    "Conv2d", "ConvTranspose2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "BatchNorm1d", "BatchNorm2d", "Dropout", "Flatten", "Unflatten", "Upsample",
    "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Identity",
    "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss",
]
