"""Every call into native_blocks.cpp checks its arguments first (native_checks.expect): a wrong shape,
dtype, device or layout raises ValueError with one line naming the argument, expected against given,
before any address reaches the compiled code (which would read or write out of bounds)."""
import pytest
import torch

from tests.trainables.test_fast_sampling import one_thread  # noqa: F401 (an autouse fixture)
from tests.trainables.test_gated_resnet_paths import make_block, native_library
from trainables.sampling.fast_ops import FastGatedResnet, ShiftedConv
from trainables.sampling.native_checks import expect, expect_int
from trainables.sampling.native_chains import NativeChains, NativeConcatElu, NativeRowBlock, NativeRowConv, NativeSkip

N, F, H, W = 3, 5, 4, 6


def _raises(message: str, call, *args, **kwargs) -> None:
    """call(*args) raises ValueError whose one line is exactly `message`."""
    with pytest.raises(ValueError) as caught:
        call(*args, **kwargs)
    text = str(caught.value)
    assert "\n" not in text and text == message, text


def _fast(streams=1, layout="columns", filters=F, conv="down_right", cond=False) -> FastGatedResnet:
    like = torch.empty(N, 0)
    return FastGatedResnet(make_block(conv, filters, streams, cond), like, H, W, rows=1, layout=layout)


def test_expect_names_the_argument_and_what_it_got():
    t = torch.zeros(3, 4)
    assert expect(t, "t", (3, None)) is t
    _raises("t: expected shape (3, 5), got (3, 4)", expect, t, "t", (3, 5))
    _raises("t: expected shape (3, *, 1), got (3, 4)", expect, t, "t", (3, None, 1))
    _raises("t: expected float32, got torch.float64 (shape (3, 4))", expect, t.double(), "t", (3, 4))
    _raises("t: expected a CPU tensor, got one on meta (shape (3, 4))", expect, t.to("meta"), "t", (3, 4))
    _raises("t: expected contiguous channels (last stride 1), got shape (4, 3) with strides (1, 4)",
            expect, t.t(), "t", (4, 3))
    _raises("t: expected a contiguous tensor, got shape (3, 2) with strides (4, 1)",
            expect, t[:, :2], "t", (3, 2), "contiguous")
    rows = torch.zeros(2, 3, 5)[:, :2]  # (2, 2, 5), batch stride 15 != 2 * 5
    _raises("t: expected evenly spaced rows (stride[0] = 2 * stride[1]), got shape (2, 2, 5) with strides (15, 5, 1)",
            expect, rows, "t", (2, 2, 5), "rows")
    _raises("t: expected a float32 tensor of shape (3,), got list", expect, [1, 2, 3], "t", (3,))
    _raises("m: expected an int in >= 1, got 0", expect_int, 0, "m", 1)
    _raises("s: expected an int in [0, 2), got 2", expect_int, 2, "s", 0, 2)


def _chains(lib, up_filters=F, down_filters=F):
    up, down = _fast(1, filters=up_filters), _fast(2, filters=down_filters)
    for b in (up, down):
        b.prepare_pixels()
        b.row_term.zero_()
    return NativeChains(lib, [[up]], [[down]], [W])


def test_chain_calls_check_their_input():
    chains = _chains(native_library())
    x = torch.randn(N, F)
    assert chains.run(chains.up[0][0], x).shape == (N, F)
    _raises("chain input: expected shape (3, 5), got (2, 5)", chains.run, chains.up[0][0], x[:2])
    _raises("chain input: expected shape (3, 5), got (3, 4)", chains.run, chains.up[0][0], x[:, :4])
    _raises("chain input: expected float32, got torch.float64 (shape (3, 5))", chains.run, chains.up[0][0], x.double())
    _raises("chain input: expected contiguous channels (last stride 1), got shape (3, 5) with strides (1, 3)",
            chains.run, chains.up[0][0], torch.randn(F, N).t())
    _raises("head input: expected shape (3, 5), got (3, 6)", chains.elu, torch.randn(N, 6))


def test_a_chain_of_blocks_of_other_sizes_is_refused():
    """The chains share one scratch buffer sized for the first block: a wider block would overflow it."""
    _raises("block 0 at column 0: output (the chain's N, F): expected shape (3, 5), got (3, 7)",
            _chains, native_library(), F, 7)


def test_concat_elu_checks_its_input():
    elu = NativeConcatElu(native_library())
    assert elu(torch.randn(N, W, F)).shape == (N, W, 2 * F)
    _raises("concat_elu input (N, n, C): expected shape (*, *, *), got (3, 5)", elu, torch.randn(N, F))
    _raises("concat_elu input (N, n, C): expected float32, got torch.float64 (shape (3, 6, 5))",
            elu, torch.randn(N, W, F, dtype=torch.float64))
    _raises("concat_elu input (N, n, C): expected contiguous channels (last stride 1), got shape (3, 5, 6) "
            "with strides (30, 1, 5)", elu, torch.randn(N, W, F).transpose(1, 2))


def test_row_conv_checks_window_outputs_and_base():
    lib = native_library()
    block = make_block("down", F, 0, False)
    conv = ShiftedConv(block.conv_input)  # (2, 3) filter, 2F = 10 input channels
    native = NativeRowConv(lib, conv)
    window = torch.randn(N, 2, W + 2, 2 * F)
    assert native(window, W).shape == (N, W, F)
    _raises(f"window: expected shape (*, 2, *, 10), got {(N, 1, W + 2, 2 * F)}", native, window[:, :1], W)
    _raises(f"window: expected shape (*, 2, *, 10), got {(N, 2, W + 2, 8)}", native, window[..., :8], W)
    _raises(f"window: expected at least 9 columns for 7 outputs, got shape {(N, 2, W + 2, 2 * F)}", native, window, 7)
    strided = torch.randn(N, 2, W + 2, 2 * F + 2)[..., : 2 * F]  # each column 12 floats apart
    _raises(f"window: expected columns of contiguous channels (stride[2] = 10), got shape {(N, 2, W + 2, 2 * F)} "
            f"with strides {strided.stride()}", native, strided, W)
    _raises("m (outputs): expected an int in >= 1, got 0", native, window, 0)
    _raises(f"base: expected shape (3, 6, 5), got {(N, W, 4)}", native, window, W, torch.randn(N, W, 4))
    _raises(f"base: expected float32, got torch.float64 (shape {(N, W, F)})", native, window, W,
            torch.randn(N, W, F, dtype=torch.float64))


def test_row_block_checks_x_elu_x_and_skip():
    fast = _fast(1, layout="rows", conv="down")
    row = NativeRowBlock(native_library(), fast)
    x, elu_x, skip = torch.randn(N, W, F), torch.randn(N, W, 2 * F), torch.randn(N, W, F)
    assert row(x, 0, elu_x, skip).shape == (N, W, F)
    _raises(f"x: expected shape (3, 6, 5), got {(N, W - 1, F)}", row, x[:, 1:], 1, elu_x, skip)
    _raises(f"elu_x: expected shape (3, 6, 10), got {(N, W, F)}", row, x, 1, x, skip)
    _raises(f"skip: expected shape (3, 6, 5), got {(2, W, F)}", row, x, 1, elu_x, skip[:2])
    _raises(f"x: expected contiguous channels (last stride 1), got shape {(N, W, F)} with strides (30, 1, 6)",
            row, torch.randn(N, F, W).transpose(1, 2), 1, elu_x, skip)
    assert fast.x_map.first == 0, "a refused call moved no band"


def test_skip_checks_stream_input_out_and_base():
    fast = _fast(2)
    skip = NativeSkip(native_library(), fast)
    elu_a = torch.randn(N, W, 2 * F)
    assert skip(1, elu_a).shape == (N, W, F)
    _raises("stream: expected an int in [0, 2), got 2", skip, 2, elu_a)
    _raises(f"elu_a: expected shape (*, *, 10), got {(N, W, F)}", skip, 0, elu_a[..., :F])
    _raises(f"elu_a: expected evenly spaced rows (stride[0] = 3 * stride[1]), got shape {(N, 3, 2 * F)} "
            f"with strides (60, 10, 1)", skip, 0, elu_a[:, :3])
    _raises(f"out: expected shape (3, 6, 5), got {(N, W, 4)}", skip, 0, elu_a, None, torch.empty(N, W, 4))
    _raises(f"out: expected a contiguous tensor, got shape {(N, W, F)} with strides (60, 10, 1)",
            skip, 0, elu_a, None, torch.empty(N, W, 2 * F)[..., :F])
    _raises(f"base: expected shape (3, 6, 5), got {(N, W, 2 * F)}", skip, 0, elu_a, elu_a)

