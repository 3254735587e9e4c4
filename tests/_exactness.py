"""Shared checks of the exactness invariant (method.md, section 2) for any arch of the propagation protocol.

A window pass started from the boundary states of a long pass reproduces the long pass's output on the
window's frames; every arch test file runs these on its own network and clips.
"""
import torch


def random_clip(b=1, t=6, h=33, w=35, dtype=torch.float64, seed=1, device='cpu'):
    """(b, t, 3, h, w) uniform frames from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, h, w, generator=g, dtype=dtype).to(device)


def long_pass(net, lqs):
    """(output, PropagationStates) of one no-grad pass over the whole clip."""
    with torch.no_grad():
        return net(lqs, return_states=True)


def assert_window_exact(net, lqs, full, states, start, length, atol=1e-10):
    """The window ``start .. start+length-1`` started from its borders equals the long pass there."""
    with torch.no_grad():
        clip = net(lqs[:, start:start + length], init_states=states.window(start, length))
    torch.testing.assert_close(clip, full[:, start:start + length], rtol=0, atol=atol)


def assert_batched_windows_exact(net, lqs, full, states, starts, length, num_before, num_after, atol=1e-10):
    """Windows of one sample at ``starts``, batched with mixed borders (``num_before``/``num_after`` frames
    of state each side), equal the long pass on each."""
    init = states.windows(starts, length)
    assert init.num_before == tuple(num_before) and init.num_after == tuple(num_after)
    with torch.no_grad():
        clips = net(torch.cat([lqs[:, s:s + length] for s in starts]), init_states=init)
    torch.testing.assert_close(clips, torch.cat([full[:, s:s + length] for s in starts]), rtol=0, atol=atol)


def assert_chained_window_exact(net, lqs, full, states, outer, inner, atol=1e-10):
    """A window ``inner`` (start, length; relative to ``outer``) cut from the record of a window pass
    ``outer`` (itself started from borders) still sees the frames outside both: equal to the long pass."""
    (o_start, o_len), (i_start, i_len) = outer, inner
    with torch.no_grad():
        mid, mid_states = net(lqs[:, o_start:o_start + o_len], init_states=states.window(o_start, o_len),
                              return_states=True)
        edge = net(lqs[:, o_start + i_start:o_start + i_start + i_len], init_states=mid_states.window(i_start, i_len))
    torch.testing.assert_close(mid, full[:, o_start:o_start + o_len], rtol=0, atol=atol)
    a = o_start + i_start
    torch.testing.assert_close(edge, full[:, a:a + i_len], rtol=0, atol=atol)


def assert_states_matter(net, lqs, full, start, length, min_diff=1e-6):
    """A plain pass over the window (zero states) does not reproduce the long pass: the states carry
    information, so the exactness checks above are not vacuous."""
    with torch.no_grad():
        plain = net(lqs[:, start:start + length])
    assert (plain - full[:, start:start + length]).abs().max() > min_diff


def assert_states_only_matches(net, lqs, init_states=None):
    """``states_only=True`` returns the very record of ``return_states=True`` without running the
    reconstruction (``net.reconstruct`` is made to fail for that call)."""
    with torch.no_grad():
        _, want = net(lqs, init_states=init_states, return_states=True)
        reconstruct = net.reconstruct
        net.reconstruct = _fail
        try:
            got = net(lqs, init_states=init_states, states_only=True)
        finally:
            net.reconstruct = reconstruct
    assert got.feats.keys() == want.feats.keys() and got.order == want.order
    for name in want.feats:
        assert torch.equal(got.feats[name], want.feats[name]), name
    assert torch.equal(got.lqs, want.lqs)
    assert (got.context is None) == (init_states is None)


def _fail(*args, **kwargs):
    raise AssertionError('the reconstruction ran')


def assert_gradient_reaches_every_parameter(net, lqs):
    """A training-mode pass and backward: finite output, and a finite, non-zero gradient on every parameter."""
    out = net.train()(lqs)
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
