"""memory_format='auto' times forward calls; on CUDA the clock must wait for the kernels (issue 11)."""
from __future__ import annotations

import functools

import pytest
import torch

import regzoo
from regzoo.utils.timing import device_synchronizer, timed


@pytest.mark.parametrize('device', ['cpu', 'meta', torch.device('cpu')])
def test_cpu_and_meta_need_no_synchronization(device):
    sync = device_synchronizer(device)
    assert sync is not torch.cuda.synchronize and sync() is None


def test_cuda_synchronizes_the_model_device():
    # CUDA kernels run asynchronously: without this a timing reads the launch cost only. No GPU is needed to
    # check which function is chosen; it is only called where the model is on CUDA.
    assert device_synchronizer(torch.device('cuda')) is torch.cuda.synchronize
    assert device_synchronizer('cuda') is torch.cuda.synchronize
    indexed = device_synchronizer('cuda:1')
    assert isinstance(indexed, functools.partial) and indexed.func is torch.cuda.synchronize
    assert indexed.args == (torch.device('cuda', 1),)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_timing_waits_for_the_kernels():
    model = regzoo.create_model('regnety_032').cuda().eval()
    x = torch.randn(64, 3, 224, 224, device='cuda')
    with torch.no_grad():
        measured = min(timed(functools.partial(model, x), 3, sync=device_synchronizer(x.device)))
        events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        events[0].record()
        model(x)
        events[1].record()
    torch.cuda.synchronize()
    assert measured >= 0.8 * events[0].elapsed_time(events[1]) / 1e3
