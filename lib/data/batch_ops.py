"""Batched augmentation operations with given per-image parameters: the applying half of
lib/data/batch_augment.py (which draws the parameters).

Each function takes a float batch [B,3,H,W] in [0, 1] on any device and per-image parameter tensors
on the same device, and equals a torchvision.transforms.v2.functional call on each image with that
image's parameters (tests/test_batch_augment.py compares them). None of them loops over the images
or reads a value back to the CPU, so they run on a GPU without synchronising.
"""
from __future__ import annotations

import torch
import torch.nn.functional as nnf

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def constant(values, like: torch.Tensor) -> torch.Tensor:
    """``values`` as a float32 tensor on ``like``'s device. Copied without waiting: a blocking copy to a
    GPU (what torch.tensor(values, device=...) does) would wait for all the work queued before it."""
    return torch.tensor(values, dtype=torch.float32).to(like.device, non_blocking=True)


def _axis_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """[B, out_size, in_size]: row i resamples output pixel i from the box [start, start + length)
    of an axis of in_size pixels, with the bilinear (triangle) filter that torch's antialiased
    interpolate uses: widened by the scale when shrinking, plain bilinear when enlarging, and
    renormalized at the box's edges (which is what clamping to the cropped image does)."""
    start, length = start.to(torch.float32)[:, None, None], length.to(torch.float32)[:, None, None]
    scale = length / out_size
    support = scale.clamp(min=1.0)
    centre = start + scale * (torch.arange(out_size, device=start.device, dtype=torch.float32)[None, :, None] + 0.5)
    pixel = torch.arange(in_size, device=start.device, dtype=torch.float32)[None, None, :]
    weights = (1.0 - ((pixel + 0.5 - centre) / support).abs()).clamp(min=0.0)
    weights = weights * ((pixel >= start) & (pixel < start + length))
    return weights / weights.sum(-1, keepdim=True)


def _enlarged_grid(start, length, in_size: int, out_size: int) -> torch.Tensor:
    """[B, out_size]: grid_sample coordinates (align_corners=False) of bilinear resizing of the box
    [start, start + length) to out_size pixels, clamped to the box as resizing the cropped image clamps."""
    start, length = start.to(torch.float32)[:, None], length.to(torch.float32)[:, None]
    index = torch.arange(out_size, device=start.device, dtype=torch.float32)[None]
    source = start + (index + 0.5) * (length / out_size) - 0.5
    source = torch.minimum(torch.maximum(source, start), start + length - 1)
    return (2.0 * source + 1.0) / in_size - 1.0


def _mirrored(values: torch.Tensor, chosen: torch.Tensor | None, dim: int) -> torch.Tensor:
    """values [B, ...] reversed along ``dim`` for the images with chosen[b]."""
    if chosen is None:
        return values
    shape = [len(values)] + [1] * (values.dim() - 1)
    return torch.where(chosen.view(shape), values.flip(dim), values)


def resized_crop(images: torch.Tensor, top, left, height, width, size: tuple[int, int],
                 flip_x: torch.Tensor | None = None, flip_y: torch.Tensor | None = None) -> torch.Tensor:
    """Image b's box (top[b], left[b], height[b], width[b]) resized to ``size``, like
    tvf.resized_crop(bilinear, antialias=True) on each image; then flipped left-right where flip_x[b]
    and upside down where flip_y[b] (a flip that follows the crop costs nothing: its sampling
    positions are read in reverse).

    Not roi_align or a plain affine grid_sample: those sample the whole image, so a box's border
    pixels would blend in the pixels just outside it (torchvision crops first), and neither has
    torchvision's antialias filter when a box shrinks. When no box can shrink (the output is at least
    the input's size), antialiasing changes nothing and one grid_sample with coordinates clamped to
    each box does it; otherwise two batched matrix products with the antialias filter's weights."""
    batch, channels, in_height, in_width = images.shape
    if size[0] >= in_height and size[1] >= in_width:
        ys = _mirrored(_enlarged_grid(top, height, in_height, size[0]), flip_y, 1)[:, :, None].expand(batch, *size)
        xs = _mirrored(_enlarged_grid(left, width, in_width, size[1]), flip_x, 1)[:, None, :].expand(batch, *size)
        return nnf.grid_sample(images, torch.stack([xs, ys], -1), mode="bilinear", padding_mode="border",
                               align_corners=False)
    rows = _mirrored(_axis_weights(top, height, in_height, size[0]), flip_y, 1)
    cols = _mirrored(_axis_weights(left, width, in_width, size[1]), flip_x, 1)
    across = images.reshape(batch, channels * in_height, in_width).bmm(cols.transpose(1, 2))
    across = across.view(batch, channels, in_height, size[1]).transpose(1, 2).reshape(batch, in_height, -1)
    return rows.bmm(across).view(batch, size[0], channels, size[1]).transpose(1, 2)


def _source_index(offset: torch.Tensor, count: int, pad_before: int, size: int, mode: str):
    """(index into the unpadded axis [B, count], inside mask) for output pixels offset..offset+count
    of the axis padded by ``pad_before`` in ``mode`` (one reflection: pads are smaller than the image)."""
    index = offset[:, None] + torch.arange(count, device=offset.device)[None, :] - pad_before
    inside = (index >= 0) & (index < size)
    if mode == "reflect":
        index = torch.where(index < 0, -index, torch.where(index >= size, 2 * (size - 1) - index, index))
    elif mode == "symmetric":
        index = torch.where(index < 0, -index - 1, torch.where(index >= size, 2 * size - 1 - index, index))
    return index.clamp(0, size - 1), inside  # "edge" is the clamp; "constant" also uses the mask


def pad_crop(images: torch.Tensor, top, left, size: tuple[int, int], padding: tuple[int, int, int, int],
             mode: str, fill: float = 0.0) -> torch.Tensor:
    """tvf.pad(padding=[left, top, right, bottom], padding_mode=mode) then tvf.crop(top[b], left[b], *size)
    for each image b, as two gathers (rows, then columns) without building the padded batch."""
    batch, channels, height, width = images.shape
    rows, rows_in = _source_index(top, size[0], padding[1], height, mode)
    cols, cols_in = _source_index(left, size[1], padding[0], width, mode)
    out = images.gather(2, rows[:, None, :, None].expand(batch, channels, size[0], width))
    out = out.gather(3, cols[:, None, None, :].expand(batch, channels, size[0], size[1]))
    if mode == "constant":
        inside = (rows_in[:, :, None] & cols_in[:, None, :])[:, None]
        out = torch.where(inside, out, torch.full_like(out, fill))
    return out


def flip(images: torch.Tensor, chosen: torch.Tensor, dim: int) -> torch.Tensor:
    """Images with chosen[b] flipped along ``dim`` (-1: left-right, -2: upside down): one gather
    with a per-image index, quicker than flipping the whole batch and choosing with torch.where."""
    length = images.shape[dim]
    index = torch.arange(length, device=images.device)
    index = torch.where(chosen[:, None], length - 1 - index, index)
    shape = [len(images), 1, 1, 1]
    shape[dim] = length
    return images.gather(dim, index.view(shape).expand(images.shape))


def _inverse_affine(angle, translate, scale, shear) -> torch.Tensor:
    """[B, 2, 3]: torchvision's _get_inverse_affine_matrix (centre of the image, pixel units) per image,
    in float64 as torchvision computes it in Python floats."""
    angle, scale = angle.to(torch.float64), scale.to(torch.float64)
    translate, shear = translate.to(torch.float64), shear.to(torch.float64)
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear[:, 0]), torch.deg2rad(shear[:, 1])
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d / scale, -b / scale, -c / scale, a / scale
    tx, ty = translate[:, 0], translate[:, 1]
    return torch.stack([torch.stack([m0, m1, -m0 * tx - m1 * ty], 1),
                        torch.stack([m3, m4, -m3 * tx - m4 * ty], 1)], 1)


def affine(images: torch.Tensor, angle, translate, scale, shear, interpolation: str = "nearest") -> torch.Tensor:
    """tvf.affine(image b, angle[b], translate[b], scale[b], shear[b], fill=0) for every b (output the input's size).

    The sampling grid is built the way torchvision's _affine_grid builds it (pixel-centred base grid
    times the matrix, then scaled to [-1, 1]) rather than with F.affine_grid, so nearest-neighbour
    picks the same pixels; fill 0 is grid_sample's zero padding."""
    batch, _, height, width = images.shape
    theta = _inverse_affine(angle, translate, scale, shear).to(torch.float32)
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=images.device)
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, device=images.device)
    base = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                        torch.ones(height, width, device=images.device)], -1).view(1, height * width, 3)
    half = constant([0.5 * width, 0.5 * height], images)
    grid = base.expand(batch, -1, -1).bmm(theta.transpose(1, 2) / half).view(batch, height, width, 2)
    return nnf.grid_sample(images, grid, mode=interpolation, padding_mode="zeros", align_corners=False)


def rotation_as_affine(angle: torch.Tensor) -> dict:
    """affine() parameters of tvf.rotate(angle): torchvision rotates by -angle in affine's convention."""
    count = len(angle)
    return dict(angle=-angle, translate=torch.zeros(count, 2), scale=torch.ones(count), shear=torch.zeros(count, 2))


def _gray(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(1)


def grayscale(images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """tvf.rgb_to_grayscale(num_output_channels=3) on the images with chosen[b]."""
    return torch.where(chosen[:, None, None, None], _gray(images).expand_as(images), images)


def hue_shift(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """tvf.adjust_hue(image b, shift[b]): RGB -> HSV, hue + shift (mod 1), back to RGB."""
    r, g, b = images.unbind(1)
    value, low = images.amax(1), images.amin(1)
    spread = value - low
    safe_spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    hue = torch.where(value == r, (g - b) / safe_spread,
                      torch.where(value == g, 2.0 + (b - r) / safe_spread, 4.0 + (r - g) / safe_spread))
    hue = torch.remainder(hue / 6.0 + shift[:, None, None], 1.0)
    saturation = spread / torch.where(value > 0, value, torch.ones_like(value))
    # HSV -> RGB: channel n is v - v*s*clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6, n = 5, 3, 1.
    k = torch.remainder(constant([5.0, 3.0, 1.0], images)[None, :, None, None]
                        + 6.0 * hue[:, None], 6.0)
    return value[:, None] * (1.0 - saturation[:, None] * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))


BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # torchvision's ColorJitter fn_idx numbering


def color_jitter(images: torch.Tensor, order: torch.Tensor, factors: torch.Tensor, with_hue: bool = True):
    """ColorJitter with given params: order [B, k] (each image's order of the k operations it applies,
    torchvision's fn_idx) and factors [B, 4] (brightness, contrast, saturation factors; hue shift).

    Round r applies operation order[b, r] to image b. Brightness, contrast and saturation are each
    ``clamp(f * x + (1 - f) * base)`` with base 0, the mean grey level, or the pixel's grey level:
    a 3x3 colour matrix and an offset per image, so a round is one batched matrix product (an
    identity for the images whose round is the hue), plus, when the hue range is not zero, the hue
    shift chosen by torch.where. Every image gets its own order without splitting the batch."""
    batch, channels, height, width = images.shape
    weights = constant(GRAY_WEIGHTS, images)
    eye = torch.eye(3, device=images.device)
    pixels = images.reshape(batch, channels, height * width)
    for round_ in range(order.shape[1]):
        op = order[:, round_:round_ + 1, None]  # [B, 1, 1]
        factor = factors.gather(1, order[:, round_:round_ + 1])[:, :, None]
        keep = torch.where(op == HUE, torch.ones_like(factor), factor)
        matrix = keep * eye + torch.where(op == SATURATION, 1.0 - keep, 0.0) * weights.expand(3, 3)
        mean_gray = (pixels.mean(2) * weights).sum(1)[:, None, None]
        offset = torch.where(op == CONTRAST, (1.0 - keep) * mean_gray, 0.0)
        out = torch.bmm(matrix, pixels).add_(offset).clamp_(0.0, 1.0)
        if with_hue:
            hued = hue_shift(pixels.view(batch, channels, height, width), factor.flatten())
            out = torch.where(op == HUE, hued.view(batch, channels, -1), out)
        pixels = out
    return pixels.view(batch, channels, height, width)


def gaussian_blur(images: torch.Tensor, kernel_size: tuple[int, int], sigma: torch.Tensor) -> torch.Tensor:
    """tvf.gaussian_blur(image b, kernel_size, [sigma[b], sigma[b]]): reflect padding, then one
    grouped convolution per axis (the 2-D Gaussian is separable) with a kernel per image."""
    batch, channels, height, width = images.shape
    kx, ky = kernel_size
    padded = nnf.pad(images, [kx // 2, kx // 2, ky // 2, ky // 2], mode="reflect")
    flat = padded.reshape(1, batch * channels, *padded.shape[-2:])

    def kernel(size: int) -> torch.Tensor:  # [B * C, size]
        x = torch.arange(size, device=images.device, dtype=torch.float32) - (size - 1) / 2
        weights = torch.exp(-x[None] ** 2 / (2.0 * sigma[:, None].to(torch.float32) ** 2))
        return (weights / weights.sum(1, keepdim=True)).repeat_interleave(channels, 0)

    flat = nnf.conv2d(flat, kernel(kx).view(batch * channels, 1, 1, kx), groups=batch * channels)
    flat = nnf.conv2d(flat, kernel(ky).view(batch * channels, 1, ky, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def erase(images: torch.Tensor, top, left, height, width, chosen, value: torch.Tensor) -> torch.Tensor:
    """tvf.erase(image b, top[b], left[b], height[b], width[b], value) on the images with chosen[b]."""
    rows = torch.arange(images.shape[-2], device=images.device)[None, :, None]
    cols = torch.arange(images.shape[-1], device=images.device)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + height)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + width)[:, None, None]) & chosen[:, None, None])
    value = value.to(images.device, images.dtype, non_blocking=True).view(1, -1, 1, 1)
    return torch.where(inside[:, None], value, images)
