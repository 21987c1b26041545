"""The tasks of the deep-PC benchmark suite: each names its dataset, its network (the
published architecture) and what the literature reports, and knows how to fit the images
to its network and build that network for a parameterisation."""

from __future__ import annotations

import dataclasses

import numpy as np

import pcscale as pc


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of `pcscale bench`.

    - `name`, `dataset`: the task's and its dataset's names.
    - `architecture`: "mlp" (PCX's MLP: 3 hidden layers, biases), "resmlp" (the μPC
      residual MLP of the paper, swept over depths), "vgg5", "vgg7" (PCX's VGGs) or
      "resnet18" (the CIFAR ResNet-18, pre-activation, no BatchNorm).
    - `side`: the image side the network takes (None: flattened vectors).
    - `crop`: the training crop of PCX's Tiny ImageNet pipeline (a random `crop`-sided
      window, and the centred one at test time); None: padding-4 random crops instead.
    - `published`: what the literature reports for it, printed beside the table.
    - `target_gap`, `target_accuracy`, `target_cosine`: the suite's targets for
      certified PC at the deepest depth (None: none set): test accuracy within
      `target_gap` of BP's, at least `target_accuracy`, and every layer's update cosine
      with BP at least `target_cosine`.
    """

    name: str
    dataset: str
    architecture: str
    side: int | None
    crop: int | None
    published: str
    target_gap: float | None = None
    target_accuracy: float | None = None
    target_cosine: float | None = None

    @property
    def flattened(self) -> bool:
        return self.side is None

    @property
    def fixed_depth(self) -> int | None:
        """The number of PC layers of the architecture (None: swept, `depths`)."""
        return {"mlp": 4, "vgg5": 5, "vgg7": 7, "resnet18": 10}.get(self.architecture)


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("mlp-mnist", "mnist", "mlp", None, None, "PCX's MLP task (3 hidden layers of 128)", target_gap=0.003,
         target_accuracy=0.98),
    Task("mlp-fashion", "fashion-mnist", "mlp", None, None, "PCX's MLP task (3 hidden layers of 128)"),
    Task("vgg5-cifar10", "cifar10", "vgg5", 32, None, "PCX: PC 88.8%, BP 90.0%"),
    Task("vgg7-cifar10", "cifar10", "vgg7", 32, None, "PCX: PC 82.7%, BP 89.6%", target_gap=0.01),
    Task("vgg5-cifar100", "cifar100", "vgg5", 32, None, "PCX's VGG-5 task (top-1 accuracy)"),
    Task("vgg7-tinyimagenet", "tinyimagenet", "vgg7", 56, 56, "PCX: PC 22.1%, BP 47.1% (VGG-5: PC 32.1%, BP 45.3%)"),
    Task("resnet18-cifar10", "cifar10", "resnet18", 32, None, "ePC: ePC 76.7%, BP 77.1% (2× BP time per epoch)",
         target_accuracy=0.77),
    Task("deep-resmlp-mnist", "mnist", "resmlp", None, None,
         "ePC authors: μPC's 128-layer networks 'only train a shallow submodel'", target_gap=0.01,
         target_cosine=0.9),
)}


def fit_images(x: np.ndarray, side: int) -> np.ndarray:
    """Bring (N, C, H, W) images to `side` × `side`: an integer upsampling (each pixel
    repeated) when `side` is a multiple of H, zero padding when smaller, a centred crop
    when larger (the offline digits, 8 × 8, become 32 × 32 this way)."""
    height, width = x.shape[2:]
    if height != width:
        raise ValueError(f"the benchmark's networks take square images, got {height} × {width}.")
    if height == side:
        return x
    if side % height == 0:
        factor = side // height
        return np.repeat(np.repeat(x, factor, axis=2), factor, axis=3)
    if height < side:
        before = (side - height) // 2
        pad = [(0, 0), (0, 0), (before, side - height - before), (before, side - height - before)]
        return np.pad(x, pad)
    first = (height - side) // 2
    return x[:, :, first:first + side, first:first + side]


def scaled(channels: int, multiplier: float) -> int:
    """A published channel count scaled by `multiplier` (at least 1)."""
    return max(1, int(round(channels * multiplier)))


POOLS = {"max": pc.nn.MaxPool2, "average": pc.nn.AvgPool2}


def build(task: Task, depth: int, *, x_shape: tuple[int, ...], classes: int, width: int, width_multiplier: float,
          activation: str, parameterisation: pc.AbstractParameterisation, dtype, key,
          pooling: str = "max") -> pc.PCModel:
    """The task's network for inputs of per-sample shape `x_shape` (`depth` is read by
    the residual MLP only; `width` by the MLPs, `width_multiplier` and `pooling` (a name
    of `POOLS`) by the VGGs)."""
    energy = pc.CrossEntropy()
    if task.architecture == "mlp":
        return pc.nn.mlp(x_shape[0], width, classes, 4, use_bias=True, activation=activation,
                         parameterisation=parameterisation, output_energy=energy, dtype=dtype, key=key)
    if task.architecture == "resmlp":
        return pc.nn.residual_mlp(x_shape[0], width, classes, depth, activation=activation,
                                  parameterisation=parameterisation, output_energy=energy, dtype=dtype, key=key)
    channels, side = x_shape[0], x_shape[1]
    if task.architecture == "resnet18":
        widths = tuple(scaled(c, width_multiplier) for c in (64, 128, 256, 512))
        return pc.nn.resnet18(channels, classes, image_size=side, widths=widths, activation=activation,
                              parameterisation=parameterisation, output_energy=energy, dtype=dtype, key=key)
    published = pc.nn.VGG5 if task.architecture == "vgg5" else pc.nn.VGG7
    blocks = tuple(dataclasses.replace(b, channels=scaled(b.channels, width_multiplier)) for b in published)
    return pc.nn.vgg(channels, classes, blocks=blocks, image_size=side, pool=POOLS[pooling](), activation=activation,
                     parameterisation=parameterisation, output_energy=energy, dtype=dtype, key=key)


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The centred `size` × `size` window of (N, C, H, W) images."""
    first = (images.shape[2] - size) // 2
    return images[:, :, first:first + size, first:first + size]
