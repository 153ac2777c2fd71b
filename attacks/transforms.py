"""Transfer tricks for iterative attacks: input diversity and translation invariance.

Both make a perturbation crafted on one model fool others more often, and both
are a single call inside an attack's step:

```python
logits = p.logits(model, transforms.diverse(point, probability, scale, generator))
grad = transforms.smooth_gradient(grad, transforms.gaussian_kernel(size, dtype=grad.dtype))
```

They work on image batches `(N, C, H, W)`; `check_images` refuses anything
else with a `ValueError` naming the option that needs images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attacks.noise import Noise

# The smallest side `diverse` shrinks to, as a fraction of the image's side:
# torchattacks' DIFGSM default (`resize_rate=0.9`).
DIVERSITY_SCALE = 0.9


def check_images(name: str, x: torch.Tensor) -> None:
    """Raise unless `x` is an image batch `(N, C, H, W)`; `name` is the option that needs it."""
    if x.ndim != 4:
        raise ValueError(
            f"{name} needs image inputs of shape (N, C, H, W), got shape {tuple(x.shape)}; "
            f"turn {name} off for flat inputs"
        )


def check_probability(name: str, value: object) -> float:
    """Return `value` if it is a number in `[0, 1]`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0.0 <= value <= 1.0)  # NaN fails too
    ):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_scale(name: str, value: object) -> float:
    """Return `value` if it is a number in `(0, 1)` (the smallest side, as a fraction)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < value < 1.0):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def check_kernel_size(name: str, value: object) -> int:
    """Return `value` if it is 0 (off) or an odd int >= 1 (a kernel centred on each pixel)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 0
        or (value > 0 and value % 2 == 0)
    ):
        raise ValueError(f"{name} must be 0 (off) or an odd int >= 1, got {value!r}")
    return value


def _draw(low: int, high: int, generator: torch.Generator) -> int:
    """An integer uniform in `[low, high]` (both included) from `generator`."""
    return int(torch.randint(low, high + 1, (1,), generator=generator, device=generator.device))


def diverse(
    x: torch.Tensor,
    probability: float,
    scale: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Input diversity, Xie et al. 2019 (https://arxiv.org/abs/1803.06978).

    With probability `probability`, shrink the batch to a random side and pad
    it back to its own size with zeros at a random offset; otherwise return
    `x` itself. The shrink is bilinear, so gradients flow back to `x`. One draw
    is shared by the whole batch, as in the paper and torchattacks.

    The new width is uniform in `[floor(scale * W), W - 1]` (at least 1), the
    height shrinks in the same ratio, and the offsets are uniform in
    `[0, padding]` on each axis. An image with a side below 2 is returned as it is.
    This keeps the shape (the paper instead enlarges a 299 image to at most 330
    and pads to 330; torchattacks' DIFGSM shrinks as here with `resize_rate=0.9`).

    Args:
        x: Images.
        probability: Chance in `[0, 1]` of transforming the batch; 0 draws nothing.
        scale: Smallest side as a fraction of the image's, in `(0, 1)`
            (`DIVERSITY_SCALE`, 0.9, is torchattacks' default).
        generator: Source of every random draw (the global random state is
            never used); pass the same one at every step of an attack.

    Returns:
        The transformed batch (or `x` itself), same shape, dtype and device.

    Raises:
        ValueError: If `x` is not `(N, C, H, W)` or an option is out of range.

    Shape:
        x `(N, C, H, W)` -> `(N, C, H, W)`.
    """
    check_images("diversity", x)
    probability = check_probability("diversity", probability)
    scale = check_scale("diversity_scale", scale)
    height, width = x.shape[-2:]
    if probability == 0 or height < 2 or width < 2:
        return x
    coin = torch.rand((), generator=generator, device=generator.device)
    if coin.item() >= probability:
        return x
    new_width = _draw(max(1, math.floor(scale * width)), width - 1, generator)
    new_height = min(height - 1, max(1, round(new_width * height / width)))
    top = _draw(0, height - new_height, generator)
    left = _draw(0, width - new_width, generator)
    # float16 and bfloat16 are not interpolated everywhere; shrink in float32 or wider.
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    shrunk = F.interpolate(work, size=(new_height, new_width), mode="bilinear", align_corners=False)
    padding = (left, width - new_width - left, top, height - new_height - top)
    return F.pad(shrunk, padding, value=0.0).to(x.dtype)


def diverse_per_sample(
    x: torch.Tensor,
    probability: float,
    scale: float,
    noise: Noise,
    *stream: int | str,
) -> torch.Tensor:
    """`diverse` with each sample's own draws (coin, size, offsets) from its seed in `noise`.

    What a sample sees then depends only on its seed and `stream` (e.g.
    `("diversity", step)`), not on the rest of the batch: attacks use this
    form so that results do not depend on the batch size.

    Shape:
        x `(N, C, H, W)` -> `(N, C, H, W)`.
    """
    check_images("diversity", x)
    height, width = x.shape[-2:]
    if probability == 0 or height < 2 or width < 2:
        return x
    shrink = noise.uniform((), *stream, "coin", dtype=torch.float64) < probability
    if not shrink.any():
        return x
    new_width = noise.integers(max(1, math.floor(scale * width)), width - 1, *stream, "width")
    new_height = (new_width * height / width).round().long().clamp(1, height - 1)
    top = noise.integers(0, height - new_height, *stream, "top")
    left = noise.integers(0, width - new_width, *stream, "left")
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = torch.where(shrink.view(-1, 1, 1, 1), torch.zeros_like(work), work)
    for size in sorted(set(new_width[shrink].tolist())):  # one interpolation per new size
        rows = (shrink & (new_width == size)).nonzero().squeeze(1)
        h, w = int(new_height[rows[0]]), size
        small = F.interpolate(work[rows], size=(h, w), mode="bilinear", align_corners=False)
        down = top[rows, None] + torch.arange(h, device=x.device)  # (n, h)
        across = left[rows, None] + torch.arange(w, device=x.device)  # (n, w)
        # Advanced indices around the channel slice put (n, h, w) first: (n, h, w, C).
        out[rows[:, None, None], :, down[:, :, None], across[:, None, :]] = small.permute(
            0, 2, 3, 1
        )
    return out.to(x.dtype)


def gaussian_kernel(
    size: int,
    sigma: float | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A normalized 2-D Gaussian kernel `(size, size)`; its entries sum to 1.

    `sigma=None` spans `[-3 sigma, 3 sigma]` over the kernel, `sigma = (size - 1) / 6`,
    as the translation-invariant attack (Dong et al. 2019) and torchattacks' TIFGSM
    build theirs. `size=1` is the identity kernel `[[1]]`.

    Args:
        size: Side of the kernel, an odd int >= 1.
        sigma: Standard deviation in pixels, > 0; None for `(size - 1) / 6`.
        dtype: The kernel's dtype.
        device: The kernel's device.

    Returns:
        The kernel.

    Raises:
        ValueError: If `size` is not an odd int >= 1 or `sigma` is not > 0.

    Shape:
        -> `(size, size)`.
    """
    if check_kernel_size("size", size) == 0:
        raise ValueError(f"size must be an odd int >= 1, got {size!r}")
    if sigma is None:
        sigma = (size - 1) / 6
    elif isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma must be None or a number > 0, got {sigma!r}")
    if size == 1:
        return torch.ones(1, 1, dtype=dtype, device=device)
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = torch.outer(line, line)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def smooth_gradient(grad: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Translation invariance, Dong et al. 2019 (https://arxiv.org/abs/1904.02884).

    Convolve each channel of the gradient with `kernel` (zero padding, same
    size): the step then fools the model at every small shift of the image at
    once, which the paper shows transfers to other models better.

    Args:
        grad: The loss gradient with respect to the images.
        kernel: A square kernel `(k, k)` with odd `k`, e.g. `gaussian_kernel(k)`.

    Returns:
        The smoothed gradient, same shape, dtype and device as `grad`.

    Raises:
        ValueError: If `grad` is not `(N, C, H, W)` or `kernel` is not an odd square.

    Shape:
        grad `(N, C, H, W)`, kernel `(k, k)` -> `(N, C, H, W)`.
    """
    check_images("translation", grad)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be an odd square (k, k), got shape {tuple(kernel.shape)}")
    channels = grad.shape[1]
    size = kernel.shape[0]
    weight = kernel.to(dtype=grad.dtype, device=grad.device).expand(channels, 1, size, size)
    return F.conv2d(grad, weight, padding=size // 2, groups=channels)  # depthwise
