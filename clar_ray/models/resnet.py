"""One ResNet18 (BasicBlock, [2, 2, 2, 2]) for 1D signals and 2D time-frequency inputs.

Legend: B batch, C input channels, T time steps, F frequency bins, W width (channels of the
first stage), D = 8 * W features.

Contract: ``(B, C, T)`` (ndim=1) or ``(B, C, F, T)`` (ndim=2) -> ``(B, D)``.

The four stages have W, 2W, 4W and 8W channels and strides 1, 2, 2, 2; each ends in global
adaptive average pooling, so any input length works. In 1D every convolution, batch norm and
pooling is 1D; the blocks use kernel 3 in both cases.

Stems (chosen so both encoders see about the same number of positions after the stem):

- 2D: the standard ResNet stem, conv 7x7 stride 2 + max-pool 3x3 stride 2 (overall stride 4):
  a 128 x 126 tf3 input becomes 32 x 32 = 1024 positions.
- 1D: conv kernel 80 stride 4 + max-pool 4 stride 4 (overall stride 16), the raw-waveform stem
  of Dai et al. 2017 ("Very deep CNNs for raw waveforms", their M-series and ResNet-34 on
  audio): the 80-sample (5 ms at 16 kHz) first layer acts as a learned filterbank, and 16000
  samples (1 s at 16 kHz) become 1000 positions. With the standard 7/2 stem, a 1 s clip would
  keep 4000 positions in stage 1 (about 4x the compute of the 2D encoder) while each kernel-3
  convolution would see only a fraction of a millisecond.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_CONV: dict[int, type[nn.Conv1d] | type[nn.Conv2d]] = {1: nn.Conv1d, 2: nn.Conv2d}
_NORM: dict[int, type[nn.BatchNorm1d] | type[nn.BatchNorm2d]] = {
    1: nn.BatchNorm1d,
    2: nn.BatchNorm2d,
}
_POOL: dict[int, type[nn.AdaptiveAvgPool1d] | type[nn.AdaptiveAvgPool2d]] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
}

STAGE_BLOCKS = (2, 2, 2, 2)  # ResNet18
STEM_1D_KERNEL = 80
STEM_1D_STRIDE = 4
STEM_1D_POOL = 4


def _check_ndim(ndim: int) -> None:
    if ndim not in _CONV:
        raise ValueError(f"ndim must be 1 or 2, got {ndim!r}")


class BasicBlock(nn.Module):
    """Two 3-wide convolutions with batch norm and an identity (or 1-wide conv) shortcut.

    ``(B, in_channels, *S) -> (B, out_channels, *S / stride)``.

    Args:
        ndim: 1 or 2 spatial dimensions.
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first convolution and of the shortcut.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        _check_ndim(ndim)
        conv, norm = _CONV[ndim], _NORM[ndim]
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=False), norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _stem(ndim: int, in_channels: int, width: int) -> nn.Sequential:
    conv, norm = _CONV[ndim], _NORM[ndim]
    if ndim == 1:
        first = conv(
            in_channels,
            width,
            STEM_1D_KERNEL,
            stride=STEM_1D_STRIDE,
            padding=(STEM_1D_KERNEL - STEM_1D_STRIDE) // 2,
            bias=False,
        )
        pool: nn.Module = nn.MaxPool1d(STEM_1D_POOL, stride=STEM_1D_POOL)
    else:
        first = conv(in_channels, width, 7, stride=2, padding=3, bias=False)
        pool = nn.MaxPool2d(3, stride=2, padding=1)
    return nn.Sequential(first, norm(width), nn.ReLU(inplace=True), pool)


class ResNet18(nn.Module):
    """ResNet18 encoder: ``(B, C, T)`` or ``(B, C, F, T)`` -> ``(B, num_features)``.

    Args:
        ndim: 1 for ``(B, C, T)`` inputs (raw audio), 2 for ``(B, C, F, T)`` (spectrograms).
        in_channels: C, the input channels.
        width: Channels of the first stage; ``num_features = 8 * width`` (512 at width 64,
            the paper's ResNet18).
        zero_init_residual: Start every block's last batch-norm scale at 0, so each residual
            block is the identity at initialisation (Goyal et al. 2017); helps large-batch
            training. Off by default (the torchvision default, used by CLAR).

    Attributes:
        num_features: D, the size of the output features.
        ndim: The number of spatial dimensions.
        in_channels: C.
    """

    def __init__(
        self, ndim: int, in_channels: int, width: int = 64, *, zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        _check_ndim(ndim)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.ndim = ndim
        self.in_channels = in_channels
        self.num_features = 8 * width
        self.stem = _stem(ndim, in_channels, width)
        stages: list[nn.Module] = []
        channels = width
        for i, blocks in enumerate(STAGE_BLOCKS):
            out_channels = width * 2**i
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(ndim, channels, out_channels, stride)]
            layers += [BasicBlock(ndim, out_channels, out_channels) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = _POOL[ndim](1)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, C, T)`` or ``(B, C, F, T)`` into ``(B, num_features)``."""
        if x.dim() != self.ndim + 2 or x.shape[1] != self.in_channels:
            expected = "(B, C, T)" if self.ndim == 1 else "(B, C, F, T)"
            raise ValueError(
                f"ResNet18(ndim={self.ndim}) expects {expected} with C={self.in_channels}, "
                f"got shape {tuple(x.shape)}"
            )
        h = self.stages(self.stem(x))  # (B, D, *S)
        return torch.flatten(self.pool(h), 1)  # (B, D)


def resnet18_1d(in_channels: int, width: int = 64, *, zero_init_residual: bool = False) -> ResNet18:
    """ResNet18 over ``(B, C, T)``; see ``ResNet18``."""
    return ResNet18(1, in_channels, width, zero_init_residual=zero_init_residual)


def resnet18_2d(in_channels: int, width: int = 64, *, zero_init_residual: bool = False) -> ResNet18:
    """ResNet18 over ``(B, C, F, T)``; see ``ResNet18``."""
    return ResNet18(2, in_channels, width, zero_init_residual=zero_init_residual)


ENCODERS: dict[str, Callable[..., ResNet18]] = {
    "resnet18_1d": resnet18_1d,
    "resnet18_2d": resnet18_2d,
}


def build_encoder(
    name: str, *, in_channels: int, width: int = 64, zero_init_residual: bool = False
) -> ResNet18:
    """Build an encoder by its ``ENCODERS`` name.

    Args:
        name: A key of ``ENCODERS``.
        in_channels: Input channels (the frontend's ``out_channels``).
        width: First-stage channels; the encoder outputs ``8 * width`` features.
        zero_init_residual: See ``ResNet18``.

    Returns:
        The encoder, with attributes ``num_features`` and ``ndim``.

    Raises:
        ValueError: On an unknown name or a bad size.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; allowed: {sorted(ENCODERS)}")
    return ENCODERS[name](in_channels, width, zero_init_residual=zero_init_residual)
