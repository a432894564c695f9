"""A fixed, exactly invertible latent space: each latent pixel is one 2x2 RGB patch.

The 12 patch values (3 colours x 2x2) are Haar-transformed per colour, then rotated into 16
channels by a fixed orthonormal 16x12 matrix and scaled so that, after FLUX's latent format
(`(z - shift) * scale`), natural scenes have roughly unit variance. Decoding applies the transpose,
so `decode(encode(img)) == img` up to float rounding; the 4 channels outside the column space are
ignored by the decoder.
"""
import torch

LATENT_CHANNELS = 16
PATCH = 2
GAIN = 6.0  # latent units per unit of (pixel - 0.5); model-space std ~1 for typical scenes

_HAAR2 = 0.5 * torch.tensor([[1., 1., 1., 1.], [1., -1., 1., -1.], [1., 1., -1., -1.], [1., -1., -1., 1.]])


def _basis():
    gen = torch.Generator().manual_seed(20251126)
    q, r = torch.linalg.qr(torch.randn(LATENT_CHANNELS, LATENT_CHANNELS, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    return q[:, :3 * PATCH * PATCH].float()  # 16 x 12, orthonormal columns


_BASIS = _basis()


def pixels_to_latent(images):
    """IMAGE [B,H,W,3] in [0,1] (H, W even) -> latent [B,16,H/2,W/2]."""
    b, h, w, c = images.shape
    if c != 3 or h % PATCH or w % PATCH:
        raise ValueError(f"expected RGB images with even height and width, got {w}x{h}x{c}")
    x = images.float() - 0.5
    x = x.reshape(b, h // 2, 2, w // 2, 2, 3).permute(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, 3, 4)
    coef = (x @ _HAAR2.T).reshape(b, h // 2, w // 2, 12)  # per colour: [DC, d1, d2, d3]
    z = GAIN * coef @ _BASIS.T
    return z.permute(0, 3, 1, 2).contiguous()


def latent_to_pixels(latent):
    """latent [B,16,h,w] -> IMAGE [B,2h,2w,3] clamped to [0,1]."""
    b, c, h, w = latent.shape
    if c != LATENT_CHANNELS:
        raise ValueError(f"expected a {LATENT_CHANNELS}-channel latent, got {c} channels")
    coef = (latent.float().permute(0, 2, 3, 1) @ _BASIS.to(latent.device)) / GAIN
    x = coef.reshape(b, h, w, 3, 4) @ _HAAR2.to(latent.device)  # H4 is its own inverse
    x = x.reshape(b, h, w, 3, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, 3)
    return (x + 0.5).clamp(0, 1)


class LinearPatchVAE:
    """Duck-typed ComfyUI VAE (what VAEEncode / VAEDecode / SaveImage graphs need) for this space.

    `latent_dims=3` gives the 5-D [B,16,1,h,w] layout of Qwen-Image / video models."""

    downscale_ratio = PATCH
    upscale_ratio = PATCH
    latent_channels = LATENT_CHANNELS
    output_channels = 3

    def __init__(self, latent_dims=2):
        if latent_dims not in (2, 3):
            raise ValueError("latent_dims must be 2 (image models) or 3 (Qwen-Image / video models)")
        self.latent_dim = latent_dims

    def encode(self, pixels):
        h, w = pixels.shape[1] // PATCH * PATCH, pixels.shape[2] // PATCH * PATCH
        z = pixels_to_latent(pixels[:, :h, :w, :3])
        return z.unsqueeze(2) if self.latent_dim == 3 else z

    def decode(self, samples):
        if samples.ndim == 5:  # [B,C,T,h,w] -> frames as images
            b, c, t, h, w = samples.shape
            samples = samples.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        return latent_to_pixels(samples)

    def encode_tiled(self, pixels, *args, **kwargs):
        return self.encode(pixels)

    def decode_tiled(self, samples, *args, **kwargs):
        return self.decode(samples)

    def spacial_compression_decode(self):
        return PATCH

    def spacial_compression_encode(self):
        return PATCH

    def temporal_compression_decode(self):
        return None

    def throw_exception_if_invalid(self):
        pass
