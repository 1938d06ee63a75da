"""OWLv2's image resize with its anti-aliasing blur done by OpenCV on CPUs.

`Owlv2ImageProcessor` pads an image to a square, blurs it with a Gaussian of sigma =
(scale - 1) / 2 and then resizes it bilinearly to 960 px, as the original JAX code did. On a
CPU torchvision runs that blur as a dense 2-D depthwise convolution: 0.9 s of the 1.25 s it
takes to preprocess one 12-megapixel photo, more than OWLv2 B/16's whole bf16 forward on a
2-core CPU. The Gaussian is separable and OpenCV filters with it in about 0.1 s. The kernel,
the reflect-101 border and every other step stay the processor's own; tests compare the
output with the unmodified processor's.
"""

from __future__ import annotations

import torch
from transformers import Owlv2ImageProcessor


def _gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian torchvision builds for `gaussian_blur` (float32)."""
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur_cv2(images: torch.Tensor, kernel_size: tuple[int, int], sigma: tuple[float, float]) -> torch.Tensor:
    """torchvision's `gaussian_blur` (float32, CPU, reflect border) as two 1-D OpenCV passes.

    Args:
        images: (B, C, H, W) float32 on the CPU.
        kernel_size, sigma: (x, y) as torchvision takes them: [0] along the width.
    """
    import cv2

    kx = _gaussian_kernel1d(int(kernel_size[0]), float(sigma[0])).numpy()
    ky = _gaussian_kernel1d(int(kernel_size[1]), float(sigma[1])).numpy()
    src = images.contiguous()
    out = torch.empty_like(src)
    src_np, out_np = src.numpy(), out.numpy()
    for b in range(src.shape[0]):
        for c in range(src.shape[1]):  # each channel plane is a contiguous (H, W) image
            cv2.sepFilter2D(src_np[b, c], -1, kx, ky, dst=out_np[b, c], borderType=cv2.BORDER_REFLECT_101)
    return out


class Owlv2CpuImageProcessor(Owlv2ImageProcessor):
    """`Owlv2ImageProcessor` with the OpenCV blur for float32 CPU images; other inputs (CUDA
    tensors, explicit sigmas) take the parent's resize. Saves as a plain Owlv2ImageProcessor."""

    def resize(self, image: torch.Tensor, size, anti_aliasing: bool = True, anti_aliasing_sigma=None, **kwargs):
        if image.device.type != "cpu" or image.dtype != torch.float32 or not anti_aliasing or anti_aliasing_sigma is not None:
            return super().resize(image, size, anti_aliasing, anti_aliasing_sigma, **kwargs)
        # the parent's rule: sigma = (scale - 1) / 2 per axis, kernel 2 ceil(3 sigma) + 1, no
        # blur when either sigma is 0; then its plain bilinear resize
        factors = torch.tensor(image.shape[2:], dtype=torch.float32) / torch.tensor((size.height, size.width))
        sigma = ((factors - 1) / 2).clamp(min=0)
        if not torch.any(sigma == 0):
            kernel_sizes = 2 * torch.ceil(3 * sigma).int() + 1
            image = gaussian_blur_cv2(image, (kernel_sizes[0], kernel_sizes[1]), sigma.tolist())
        return super(Owlv2ImageProcessor, self).resize(image, size=size, antialias=False)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["image_processor_type"] = Owlv2ImageProcessor.__name__  # loadable without ovdet
        return out


def cpu_fast(image_processor):
    """The same settings in an `Owlv2CpuImageProcessor` when given the fast (torchvision)
    `Owlv2ImageProcessor`; anything else is returned unchanged."""
    if type(image_processor) is not Owlv2ImageProcessor:
        return image_processor
    return Owlv2CpuImageProcessor.from_dict(image_processor.to_dict())
