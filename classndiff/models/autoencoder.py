"""The autoencoders a latent denoiser can work in: diffusers' `AutoencoderKL`, and the same
with a colour skip. No I/O here (hub.load_vae reads them)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

COLOUR_CHANNELS = 3


class ColourSkipAutoencoder(AutoencoderKL):
    """An `AutoencoderKL` whose last three latent channels are not learned: they are the
    image's own RGB, average-pooled to the latent grid, and the decoder paints its output on
    top of them upsampled (bilinear). A small latent trained on HAM10000 for minutes keeps
    texture but trades the rare hues away (the magenta of vascular lesions comes back brown);
    here the colour of every latent cell is kept by construction, and a denoiser generates it
    as a pixel-space one would, at the latent side. Same config as `AutoencoderKL`; its
    `latent_channels` include the three colour channels."""

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        moments = super()._encode(x)
        mean, logvar = moments.chunk(2, dim=1)
        colour = F.avg_pool2d(x.to(mean.dtype), self.downscale)
        mean = torch.cat([mean[:, :-COLOUR_CHANNELS], colour], 1)
        # A (near-)zero variance: the colour is the image's, sampled or not.
        logvar = torch.cat([logvar[:, :-COLOUR_CHANNELS],
                            torch.full_like(colour, -30.0)], 1)
        return torch.cat([mean, logvar], 1)

    def _decode(self, z: torch.Tensor, return_dict: bool = True):  # noqa: ANN202
        from diffusers.models.autoencoders.vae import DecoderOutput

        detail = super()._decode(z).sample
        base = F.interpolate(z[:, -COLOUR_CHANNELS:].to(detail.dtype),
                             scale_factor=self.downscale, mode="bilinear", align_corners=False)
        return DecoderOutput(sample=detail + base) if return_dict else (detail + base,)


AUTOENCODERS = {cls.__name__: cls for cls in (AutoencoderKL, ColourSkipAutoencoder)}


def autoencoder_class(vae_config: dict[str, Any]) -> type[AutoencoderKL]:
    """The class a diffusers config's `_class_name` names (`AutoencoderKL` when absent)."""
    name = vae_config.get("_class_name", "AutoencoderKL")
    if name not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder class {name!r}: expected one of "
                         f"{sorted(AUTOENCODERS)}")
    return AUTOENCODERS[name]


@torch.no_grad()
def equalise_learned_channels(model: ColourSkipAutoencoder, latents: torch.Tensor) -> None:
    """Give every learned latent channel zero mean and the colour channels' standard
    deviation, folded into the 1×1 convolutions around the latent (quant_conv scales and
    shifts each mean, post_quant_conv undoes it), so reconstructions do not change and one
    scaling factor brings colour and texture channels alike to unit variance. `latents`: the
    model's latent means of some training images."""
    learned = latents.shape[1] - COLOUR_CHANNELS
    target = latents[:, learned:].std()
    mean = latents[:, :learned].mean(dim=(0, 2, 3))
    gain = target / latents[:, :learned].std(dim=(0, 2, 3)).clamp(min=1e-8)
    quant, post = model.quant_conv, model.post_quant_conv
    channels = latents.shape[1]
    w_post = post.weight[:, :learned, 0, 0].clone()
    post.bias += w_post @ mean
    post.weight[:, :learned] /= gain.view(1, -1, 1, 1)
    quant.bias[:learned] = gain * (quant.bias[:learned] - mean)
    quant.weight[:learned] *= gain.view(-1, 1, 1, 1)
    quant.bias[channels : channels + learned] += 2 * gain.log()
