"""The network is causal in raster order, sees what it may, and fits any H, W divisible by 4."""
import pytest
import torch

from trainables.likelihoods import mixture_param_count
from trainables.pixelcnnpp import PixelCNNpp


def _model(channels, conditional=False, nr_resnet=1, filters=8, mixtures=2):
    torch.manual_seed(0)
    return PixelCNNpp(channels, filters, nr_resnet, mixtures, conditional=conditional).double().eval()


def _input_grad(model, x, pixel, x_noisy=None):
    """Gradient of every output channel at `pixel` (raster index) w.r.t. x (and x_noisy)."""
    x = x.clone().requires_grad_(True)
    inputs = [x]
    if x_noisy is not None:
        x_noisy = x_noisy.clone().requires_grad_(True)
        inputs.append(x_noisy)
    out = model(x, x_noisy) if x_noisy is not None else model(x)
    i, j = divmod(pixel, x.shape[3])
    grads = torch.autograd.grad(out[:, :, i, j].sum(), inputs, allow_unused=True)
    return [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, inputs)]


@pytest.mark.parametrize("channels,conditional", [(1, False), (3, False), (1, True), (3, True)])
def test_output_never_depends_on_current_or_later_pixels(channels, conditional):
    model = _model(channels, conditional)
    h, w = 8, 8
    x = torch.rand(2, channels, h, w, dtype=torch.float64) * 2 - 1
    x_noisy = torch.randn_like(x) if conditional else None
    for pixel in [0, 1, 7, 8, 27, 36, 62, 63]:
        grad_x = _input_grad(model, x, pixel, x_noisy)[0]  # (N, C, H, W)
        per_pixel = grad_x.abs().sum(dim=(0, 1)).flatten()  # (H*W,)
        assert torch.all(per_pixel[pixel:] == 0), f"pixel {pixel} sees itself or the future"
        i, j = divmod(pixel, w)
        if j > 0:
            assert per_pixel[pixel - 1] > 0, f"pixel {pixel} does not see its left neighbour"
        if i > 0:
            assert per_pixel[pixel - w] > 0, f"pixel {pixel} does not see the pixel above"


def test_last_pixel_sees_every_earlier_pixel():
    model = _model(1, nr_resnet=2)
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64) * 2 - 1
    per_pixel = _input_grad(model, x, 63)[0].abs().flatten()
    assert torch.all(per_pixel[:63] > 0)


@pytest.mark.parametrize("channels", [1, 3])
def test_denoiser_clean_output_sees_all_of_noisy_image(channels):
    model = _model(channels, conditional=True, nr_resnet=2)
    x = torch.rand(1, channels, 8, 8, dtype=torch.float64) * 2 - 1
    x_noisy = x + 0.3 * torch.randn_like(x)
    for pixel in [0, 63]:
        grad_noisy = _input_grad(model, x, pixel, x_noisy)[1]
        assert torch.all(grad_noisy.abs().sum(dim=(0, 1)) > 0), f"pixel {pixel} misses part of x~"


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 12, 20)])
@pytest.mark.parametrize("batch", [1, 3])
def test_output_shape_for_any_size_divisible_by_four(shape, batch):
    c, h, w = shape
    model = PixelCNNpp(c, 4, 1, 3)
    out = model(torch.zeros(batch, c, h, w))
    assert out.shape == (batch, mixture_param_count(c, 3), h, w)


def test_batch_elements_are_independent():
    model = _model(1)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    full = model(x)
    alone = model(x[2:3])
    torch.testing.assert_close(full[2:3], alone)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="divisible by 4"):
        PixelCNNpp(1, 4, 1, 2)(torch.zeros(1, 1, 10, 8))
    with pytest.raises(ValueError, match="x_noisy"):
        PixelCNNpp(1, 4, 1, 2, conditional=True)(torch.zeros(1, 1, 8, 8))
