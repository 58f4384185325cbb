"""The published suite, as data: the problems the benchmark times, and how to pick some of them.

:data:`SUITE` (version :data:`SUITE_VERSION`) holds the distinct convolution
layers of ResNet-18, ResNet-50 and VGG-16 at batch 8; the layer classes that
are not one large matrix product: depthwise layers of MobileNetV2 and
EfficientNet-B0 (stride 1 and 2), ResNeXt's grouped 3×3 layers, DeepLab's
dilated layers, stems (3 input channels, 3×3/5×5/7×7, stride 2), U-Net and
DCGAN decoders (transposed, stride 2), 3-d segmentation layers and 1-d audio
layers; the pooling layers of ResNet, VGG, Inception and 3-d and 1-d nets
(suite version 3); image filtering of a 2048×2048 image with kernels from 3
to 63; and one peak-memory problem. Nothing here measures anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Sequence

from ... import shapes
from ...spec import conv_spec

__all__ = ["ConvProblem", "PoolProblem", "FilterProblem", "MemoryProblem", "Problem", "SUITE", "SUITE_VERSION",
           "POOL_FAMILY", "CONV_PHASES", "POOL_PHASES", "FILTER_KERNEL_SIZES", "select_problems", "describe_problem", "list_problems"]

SUITE_VERSION = "3"
#: Every convolution layer is timed in these three passes, on both sides.
CONV_PHASES = ("forward", "input_grad", "weight_grad")
#: The family of every pooling problem: the results page keeps them out of the convolution layers' geometric means.
POOL_FAMILY = "pool"
#: A pooling layer has no weight: its forward and its input gradient.
POOL_PHASES = ("forward", "input_grad")
FILTER_KERNEL_SIZES = (3, 5, 7, 11, 15, 21, 31, 47, 63)


@dataclass(frozen=True)
class ConvProblem:
    """One convolution layer: ``conv(input, weight, stride, padding, dilation, groups)``.

    Padding is symmetric, one int per spatial dimension, so both libraries take it as is.
    With ``transposed`` it is ``conv_transpose(input, weight, stride, padding, 0, groups,
    dilation)``: ``weight`` is ``(C_in, C_out/groups, *k)``, as PyTorch lays it out.
    """

    name: str
    family: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    dtype: str = "float32"
    quick: bool = False
    transposed: bool = False
    kind: str = field(default="conv", init=False)

    @property
    def rank(self) -> int:
        return len(self.weight_shape) - 2

    def spec(self):
        """The frozen :class:`~convolab.spec.ConvSpec` of the convolution computed; raises if the shapes do not fit.

        For a transposed layer that is the convolution whose input gradient it is:
        from the (larger) output back to the input.
        """
        if not self.transposed:
            return conv_spec(self.input_shape, self.weight_shape, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, groups=self.groups, op=self.name)
        batch, _, *spatial = self.input_shape
        out_channels = self.weight_shape[1] * self.groups
        output_size = [shapes.conv_transpose_output_size(size, k, s, (p, p), d, 0) for size, k, s, p, d in
                       zip(spatial, self.weight_shape[2:], self.stride, self.padding, self.dilation)]
        return conv_spec((batch, out_channels, *output_size), self.weight_shape, stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups, op=self.name)

    @property
    def output_shape(self) -> tuple[int, ...]:
        spec = self.spec()
        return spec.input_shape if self.transposed else spec.output_shape

    @property
    def flops(self) -> int:
        """Multiply-adds times two; the input and weight gradients cost the same."""
        return self.spec().flops

    @property
    def is_3x3(self) -> bool:
        """A dense (ungrouped) 2-d 3×3 convolution, the kind whose rate is set against the BLAS's."""
        return self.weight_shape[2:] == (3, 3) and self.groups == 1 and not self.transposed

    @property
    def is_wide_3x3(self) -> bool:
        """A dense 2-d 3×3 stride-1 layer with at least 64 channels in and out: where Winograd pays."""
        return (self.is_3x3 and self.stride == (1, 1) and self.dilation == (1, 1)
                and min(self.input_shape[1], self.weight_shape[0]) >= 64)

    def describe(self) -> str:
        parts = [f"x{self.input_shape} w{self.weight_shape}"]
        for label, value, default in (("stride", self.stride, 1), ("padding", self.padding, 0),
                                      ("dilation", self.dilation, 1)):
            if any(v != default for v in value):
                parts.append(f"{label} {value[0] if len(set(value)) == 1 else value}")
        if self.groups != 1:
            parts.append(f"groups {self.groups}")
        if self.transposed:
            parts.append("transposed")
        return ", ".join(parts)


@dataclass(frozen=True)
class PoolProblem:
    """One pooling layer: ``max_pool``, ``avg_pool`` (``kernel_size``, ``stride``, ``padding``,
    ``count_include_pad``) or ``adaptive_avg_pool`` (``output_size``), N-d, timed in :data:`POOL_PHASES`.

    The input gradient is computed from ``grad_output`` and the input on both sides,
    so a max pool's includes finding each window's maximum again (convolab's
    ``max_pool_input``; PyTorch's forward with indices and its backward).
    """

    name: str
    family: str
    op: str
    input_shape: tuple[int, ...]
    kernel_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    count_include_pad: bool = True
    output_size: tuple[int, ...] = ()
    dtype: str = "float32"
    quick: bool = False
    kind: str = field(default=POOL_FAMILY, init=False)

    @property
    def rank(self) -> int:
        return len(self.input_shape) - 2

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.op == "adaptive_avg_pool":
            return (*self.input_shape[:2], *self.output_size)
        return (*self.input_shape[:2], *(shapes.pool_output_size(size, k, s, p) for size, k, s, p in
                                         zip(self.input_shape[2:], self.kernel_size, self.stride, self.padding)))

    @property
    def flops(self) -> int:
        """One comparison or addition per window tap (an adaptive window's taps: the input, once)."""
        if self.op == "adaptive_avg_pool":
            return prod(self.input_shape)
        return prod(self.output_shape) * prod(self.kernel_size)

    def pool_arguments(self) -> dict[str, Any]:
        """The keyword arguments both libraries' pooling functions take for this problem."""
        if self.op == "adaptive_avg_pool":
            return {"output_size": self.output_size}
        arguments: dict[str, Any] = {"kernel_size": self.kernel_size, "stride": self.stride,
                                     "padding": self.padding}
        if self.op == "avg_pool":
            arguments["count_include_pad"] = self.count_include_pad
        return arguments

    def describe(self) -> str:
        if self.op == "adaptive_avg_pool":
            return f"{self.op} x{self.input_shape} to {self.output_size}"
        parts = [f"{self.op} x{self.input_shape} k{self.kernel_size}"]
        for label, value, default in (("stride", self.stride, self.kernel_size), ("padding", self.padding, None)):
            if value != default and any(value):
                parts.append(f"{label} {value[0] if len(set(value)) == 1 else value}")
        if self.op == "avg_pool" and not self.count_include_pad:
            parts.append("count_include_pad False")
        return ", ".join(parts)


def _pool(name: str, op: str, input_shape: tuple[int, ...], kernel: int = 0, *, stride: int | None = None,
          padding: int = 0, count_include_pad: bool = True, output_size: int = 0, quick: bool = False) -> PoolProblem:
    """A pooling layer with a square (cubic) window; the stride defaults to the kernel size, as in PyTorch."""
    rank = len(input_shape) - 2
    if op == "adaptive_avg_pool":
        return PoolProblem(name=name, family=POOL_FAMILY, op=op, input_shape=input_shape,
                           output_size=(output_size,) * rank, quick=quick)
    return PoolProblem(name=name, family=POOL_FAMILY, op=op, input_shape=input_shape, kernel_size=(kernel,) * rank,
                       stride=(kernel if stride is None else stride,) * rank, padding=(padding,) * rank,
                       count_include_pad=count_include_pad, quick=quick)


@dataclass(frozen=True)
class FilterProblem:
    """Image filtering: ``correlate(image, kernel, mode)`` on one 2-d channel, against SciPy."""

    name: str
    family: str
    image_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    mode: str = "same"
    dtype: str = "float32"
    quick: bool = False
    kind: str = field(default="filter", init=False)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.mode == "same":
            return self.image_shape
        if self.mode == "full":
            return tuple(i + k - 1 for i, k in zip(self.image_shape, self.kernel_shape))
        return tuple(i - k + 1 for i, k in zip(self.image_shape, self.kernel_shape))

    @property
    def flops(self) -> int:
        """What the direct method would spend: two per kernel tap per output sample."""
        return 2 * prod(self.output_shape) * prod(self.kernel_shape)

    def describe(self) -> str:
        return f"image {self.image_shape} kernel {self.kernel_shape} mode {self.mode!r}"


@dataclass(frozen=True)
class MemoryProblem:
    """The peak-memory target: one forward convolution, measured in a fresh subprocess."""

    name: str
    family: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    padding: int
    dtype: str = "float32"
    quick: bool = True
    kind: str = field(default="memory", init=False)

    def describe(self) -> str:
        return f"x{self.input_shape} w{self.weight_shape}, padding {self.padding}"


Problem = ConvProblem | PoolProblem | FilterProblem | MemoryProblem


def _layer(name: str, family: str, batch: int, c_in: int, c_out: int, size: int | tuple[int, ...], kernel: int,
           *, rank: int = 2, stride: int = 1, padding: int | None = None, dilation: int = 1, groups: int = 1,
           quick: bool = False, transposed: bool = False) -> ConvProblem:
    """A layer with a square (cubic) kernel; padding defaults to "same" at stride 1, ``d*(k-1)/2``.

    A transposed layer's weight is ``(c_in, c_out/groups, *k)``.
    """
    spatial = (size,) * rank if isinstance(size, int) else tuple(size)
    pad = dilation * (kernel - 1) // 2 if padding is None else padding
    weight = (c_in, c_out // groups) if transposed else (c_out, c_in // groups)
    return ConvProblem(
        name=name, family=family, input_shape=(batch, c_in, *spatial), weight_shape=(*weight, *(kernel,) * rank),
        stride=(stride,) * rank, padding=(pad,) * rank, dilation=(dilation,) * rank, groups=groups, quick=quick,
        transposed=transposed,
    )


def _build_suite() -> tuple[Problem, ...]:
    b = 8  # the batch of every ResNet/VGG/MobileNet layer
    layers = [
        # The stem shared by ResNet-18 and ResNet-50: 7×7, stride 2, padding 3, 224 -> 112.
        _layer("stem.resnet_conv1_7x7s2", "stem", b, 3, 64, 224, 7, stride=2, padding=3, quick=True),
        # ResNet-18 (torchvision): its distinct layer shapes (basic blocks).
        _layer("resnet18.layer1.conv3x3", "resnet18", b, 64, 64, 56, 3),
        _layer("resnet18.layer2.0.conv1_3x3s2", "resnet18", b, 64, 128, 56, 3, stride=2),
        _layer("resnet18.layer2.conv3x3", "resnet18", b, 128, 128, 28, 3),
        _layer("resnet18.layer2.0.downsample_1x1s2", "resnet18", b, 64, 128, 56, 1, stride=2),
        _layer("resnet18.layer3.0.conv1_3x3s2", "resnet18", b, 128, 256, 28, 3, stride=2),
        _layer("resnet18.layer3.conv3x3", "resnet18", b, 256, 256, 14, 3),
        _layer("resnet18.layer3.0.downsample_1x1s2", "resnet18", b, 128, 256, 28, 1, stride=2),
        _layer("resnet18.layer4.0.conv1_3x3s2", "resnet18", b, 256, 512, 14, 3, stride=2),
        _layer("resnet18.layer4.conv3x3", "resnet18", b, 512, 512, 7, 3, quick=True),
        _layer("resnet18.layer4.0.downsample_1x1s2", "resnet18", b, 256, 512, 14, 1, stride=2),
        # ResNet-50 (torchvision v1.5, stride on the 3×3): bottleneck shapes not already above
        # (its stride-1 3×3 layers are ResNet-18's).
        _layer("resnet50.layer1.conv1_1x1", "resnet50", b, 64, 64, 56, 1),
        _layer("resnet50.layer1.conv3_1x1", "resnet50", b, 64, 256, 56, 1),
        _layer("resnet50.layer1.conv1_1x1_from256", "resnet50", b, 256, 64, 56, 1),
        _layer("resnet50.layer2.0.conv1_1x1", "resnet50", b, 256, 128, 56, 1),
        _layer("resnet50.layer2.0.conv2_3x3s2", "resnet50", b, 128, 128, 56, 3, stride=2),
        _layer("resnet50.layer2.0.downsample_1x1s2", "resnet50", b, 256, 512, 56, 1, stride=2),
        _layer("resnet50.layer2.conv3_1x1", "resnet50", b, 128, 512, 28, 1),
        _layer("resnet50.layer2.conv1_1x1", "resnet50", b, 512, 128, 28, 1),
        _layer("resnet50.layer3.0.conv2_3x3s2", "resnet50", b, 256, 256, 28, 3, stride=2),
        _layer("resnet50.layer3.conv3_1x1", "resnet50", b, 256, 1024, 14, 1),
        _layer("resnet50.layer3.conv1_1x1", "resnet50", b, 1024, 256, 14, 1, quick=True),
        _layer("resnet50.layer4.0.conv2_3x3s2", "resnet50", b, 512, 512, 14, 3, stride=2),
        _layer("resnet50.layer4.conv3_1x1", "resnet50", b, 512, 2048, 7, 1),
        _layer("resnet50.layer4.conv1_1x1", "resnet50", b, 2048, 512, 7, 1),
        # VGG-16 at 224×224: its distinct 3×3 layer shapes (conv3_3, conv4_3, conv5_2/3 repeat ones here).
        _layer("vgg16.conv1_1", "vgg16", b, 3, 64, 224, 3),
        _layer("vgg16.conv1_2", "vgg16", b, 64, 64, 224, 3),
        _layer("vgg16.conv2_1", "vgg16", b, 64, 128, 112, 3),
        _layer("vgg16.conv2_2", "vgg16", b, 128, 128, 112, 3),
        _layer("vgg16.conv3_1", "vgg16", b, 128, 256, 56, 3),
        _layer("vgg16.conv3_2", "vgg16", b, 256, 256, 56, 3),
        _layer("vgg16.conv4_1", "vgg16", b, 256, 512, 28, 3),
        _layer("vgg16.conv4_2", "vgg16", b, 512, 512, 28, 3),
        _layer("vgg16.conv5_1", "vgg16", b, 512, 512, 14, 3),
        # MobileNetV2 depthwise 3×3 layers: block 2 (96 channels, stride 2, 112 -> 56) and block 4 (144, 56).
        _layer("mobilenet_v2.dw3x3s2_96ch", "mobilenet_dw", b, 96, 96, 112, 3, stride=2, groups=96),
        _layer("mobilenet_v2.dw3x3_144ch", "mobilenet_dw", b, 144, 144, 56, 3, groups=144, quick=True),
        # 1-d audio: wav2vec 2.0's first feature-encoder layer on 1 s of 16 kHz audio, and a
        # WaveNet-style dilated layer.
        _layer("audio1d.wav2vec2_conv0_k10s5", "audio1d", b, 1, 512, 16000, 10, rank=1, stride=5, padding=0,
               quick=True),
        _layer("audio1d.dilated_k3d8_64ch", "audio1d", b, 64, 64, 16000, 3, rank=1, dilation=8),
        # 3-d volume: a 3-D U-Net layer, 32 channels on a 16×64×64 patch.
        _layer("volume3d.unet_3x3x3_32ch", "volume3d", 2, 32, 32, (16, 64, 64), 3, rank=3, quick=True),
        # --- Layer classes that are not one large matrix product (suite version 2) ---
        # Depthwise: MobileNetV2's first block (32 channels at 112) and EfficientNet-B0's 5x5 layers.
        _layer("mobilenet_v2.dw3x3_32ch_112", "depthwise", b, 32, 32, 112, 3, groups=32),
        _layer("efficientnet_b0.dw5x5s2_144ch", "depthwise", b, 144, 144, 56, 5, stride=2, groups=144),
        _layer("efficientnet_b0.dw5x5_240ch", "depthwise", b, 240, 240, 28, 5, groups=240),
        # ResNeXt-50 (32x4d): grouped 3x3 with 4 and 8 channels per group.
        _layer("resnext50.layer1.conv2_g32", "grouped", b, 128, 128, 56, 3, groups=32),
        _layer("resnext50.layer2.conv2_g32", "grouped", b, 256, 256, 28, 3, groups=32, quick=True),
        # DeepLabv3 (output stride 16/8): dilated 3x3 in the last stages, and an ASPP branch.
        _layer("deeplabv3.layer3_3x3d2_256ch", "dilated", 2, 256, 256, 33, 3, dilation=2),
        _layer("deeplabv3.aspp_3x3d6_256ch", "dilated", 2, 512, 256, 33, 3, dilation=6, quick=True),
        # Stems: 3 input channels, stride 2 (MobileNet/EfficientNet's 3x3, a 5x5).
        _layer("stem.mobilenet_3x3s2_32ch", "stem", b, 3, 32, 224, 3, stride=2, padding=1),
        _layer("stem.5x5s2_48ch", "stem", b, 3, 48, 224, 5, stride=2, padding=2),
        # Decoders: transposed, stride 2 (U-Net's 2x2 up-convolution, DCGAN's 4x4 padding 1).
        _layer("unet.up2x2s2_128to64", "transposed", b, 128, 64, 56, 2, stride=2, padding=0, transposed=True),
        _layer("dcgan.up4x4s2_256to128", "transposed", b, 256, 128, 16, 4, stride=2, padding=1, transposed=True,
               quick=True),
        _layer("dcgan.up4x4s2_64to3", "transposed", b, 64, 3, 64, 4, stride=2, padding=1, transposed=True),
        # 3-d segmentation: a 3-D U-Net encoder layer, 16 -> 32 channels.
        _layer("volume3d.unet_3x3x3_16to32", "volume3d", 2, 16, 32, (32, 64, 64), 3, rank=3),
        # 1-d: a k=9 layer on 4000 samples (speech front ends), and a 1-d depthwise one.
        _layer("audio1d.k9_64ch", "audio1d", b, 64, 64, 4000, 9, rank=1),
        _layer("audio1d.dw_k9_256ch", "audio1d", b, 256, 256, 4000, 9, rank=1, groups=256),
        # Inception-style 5x5 layer with 96 channels.
        _layer("inception.5x5_96ch", "5x5", b, 96, 96, 28, 5),
    ]
    pools = [
        # --- Pooling layers (suite version 3) ---
        # ResNet's stem max pool (3x3, stride 2, padding 1, 112 -> 56) and VGG's 2x2 stride-2 max pool.
        _pool("resnet.maxpool3x3s2", "max_pool", (b, 64, 112, 112), 3, stride=2, padding=1, quick=True),
        _pool("vgg16.maxpool2x2s2", "max_pool", (b, 128, 112, 112), 2),
        # Inception's 3x3 stride-1 average pool, the padding not counted; ResNet's global average pool.
        _pool("inception.avgpool3x3s1_nopad", "avg_pool", (b, 192, 28, 28), 3, stride=1, padding=1,
              count_include_pad=False),
        _pool("resnet.global_avgpool", "adaptive_avg_pool", (b, 512, 7, 7), output_size=1),
        # A 3-D U-Net's 2x2x2 max pool, and a 1-d max pool (k 3, stride 2) on 16 kHz audio features.
        _pool("volume3d.maxpool2x2x2", "max_pool", (2, 32, 32, 64, 64), 2),
        _pool("audio1d.maxpool_k3s2", "max_pool", (b, 64, 16000), 3, stride=2),
    ]
    filters = [
        FilterProblem(name=f"filter2d.k{k:02d}", family="filtering", image_shape=(2048, 2048), kernel_shape=(k, k),
                      quick=k in (3, 7))
        for k in FILTER_KERNEL_SIZES
    ]
    memory = [MemoryProblem(name="memory.conv3x3_64ch_1024x1024", family="memory", input_shape=(1, 64, 1024, 1024),
                            weight_shape=(64, 64, 3, 3), padding=1)]
    return (*layers, *pools, *filters, *memory)


#: The published suite, version :data:`SUITE_VERSION`.
SUITE: tuple[Problem, ...] = _build_suite()


def select_problems(problems: Sequence[Problem], *, quick: bool = False,
                    filters: Sequence[str] | None = None) -> list[Problem]:
    """The problems to run: the quick subset if ``quick``, then those whose name holds any of ``filters``.

    >>> [p.name for p in select_problems(SUITE, filters=["filter2d.k6", "k03"])]
    ['filter2d.k03', 'filter2d.k63']
    """
    chosen = [p for p in problems if p.quick or not quick]
    if filters:
        chosen = [p for p in chosen if any(f in p.name for f in filters)]
    return chosen


def describe_problem(problem: Problem) -> dict[str, Any]:
    """``problem`` as a JSON-ready dict: its name, family, kind, shapes and (for a convolution) its FLOPs."""
    described: dict[str, Any] = {"name": problem.name, "family": problem.family, "kind": problem.kind,
                                 "dtype": problem.dtype, "summary": problem.describe()}
    if isinstance(problem, ConvProblem):
        described.update(input_shape=problem.input_shape, weight_shape=problem.weight_shape, stride=problem.stride,
                         padding=problem.padding, dilation=problem.dilation, groups=problem.groups,
                         output_shape=problem.output_shape, flops=problem.flops)
    elif isinstance(problem, PoolProblem):
        described.update(op=problem.op, input_shape=problem.input_shape, output_shape=problem.output_shape,
                         **problem.pool_arguments(), flops=problem.flops)
    elif isinstance(problem, FilterProblem):
        described.update(image_shape=problem.image_shape, kernel_shape=problem.kernel_shape, mode=problem.mode,
                         flops=problem.flops)
    else:
        described.update(input_shape=problem.input_shape, weight_shape=problem.weight_shape, padding=problem.padding)
    return described


def list_problems(problems: Sequence[Problem]) -> str:
    """One line per problem: its name, family and shapes (``convolab bench --list``)."""
    width = max((len(p.name) for p in problems), default=0)
    return "".join(f"{p.name.ljust(width)}  {p.family:<13} {p.describe()}\n" for p in problems)
