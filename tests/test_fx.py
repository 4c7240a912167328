"""torch.fx on regzoo models: traced graphs script, and torchvision's feature extraction works on stage outputs.

Regression (issue 12): ``from __future__ import annotations`` in the model modules made the ``forward``
annotations strings, which fx copies into the code it generates, so ``torch.jit.script(torch.fx.symbolic_trace(m))``
raised ``Unknown type name '_torch_Tensor_'`` (timm's RegNet passes). The per-arch fx checks of timm's
contract are in test_timm_contract.py; this module checks the pieces (blocks, the features wrapper, timm's
node names, train mode with drop path) on two small archs.
"""
import copy

import pytest
import timm
import torch
from helpers import randomize_bn
from torchvision.models.feature_extraction import create_feature_extractor

import regzoo

ARCHS = ('regnetx_002', 'regnety_002')


def _x(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(regzoo.create_model(name, **kwargs)).eval()


@pytest.mark.parametrize('name', ARCHS)
def test_traced_model_scripts(name):
    model = _model(name)
    traced = torch.fx.symbolic_trace(model)
    # the generated signature carries real types, not the strings of postponed annotations
    assert 'def forward(self, x : torch.Tensor) -> torch.Tensor:' in traced.code
    scripted = torch.jit.script(traced)
    x = _x()
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(traced(x), expected) and torch.equal(scripted(x), expected)


def test_traced_blocks_script():
    """Each trunk module traced on its own (a user fx-transforming one block) scripts, too."""
    model = _model('regnety_002')
    x = _x()
    with torch.no_grad():
        stem = model.stem(x)
        s1 = model.s1(stem)
        cases = [(model.stem, x), (model.s2.b1, s1), (model.s2.b1.conv2, model.s2.b1.conv1(s1)), (model.s2, s1),
                 (model.s2.b1.se, torch.randn(2, model.s2.b1.conv2.conv.out_channels, 8, 8))]
        for module, inp in cases:
            scripted = torch.jit.script(torch.fx.symbolic_trace(module))
            assert torch.equal(scripted(inp), module(inp)), type(module).__name__


@pytest.mark.parametrize('name', ARCHS)
def test_traced_features_only_model_scripts(name):
    features = regzoo.create_model(name, features_only=True, out_indices=(1, 4))
    features.load_state_dict({k: v for k, v in _model(name).state_dict().items() if k in features.state_dict()})
    features.eval()
    scripted = torch.jit.script(torch.fx.symbolic_trace(features))
    x = _x()
    with torch.no_grad():
        expected = features(x)
        got = scripted(x)
    assert len(got) == len(expected) == 2
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


@pytest.mark.parametrize('mode', ['eval', 'train'])
@pytest.mark.parametrize('name', ARCHS)
def test_feature_extractor_with_timm_node_names(name, mode):
    """The return nodes a timm user writes for timm's RegNet (stage names, a block's output node, the final conv)
    work on ours and give timm's maps, eager and scripted, in train and eval mode."""
    nodes = {'stem': 'stem', 's1': 's1', 's2.b1.act3': 'first_block_s2', 's4': 's4', 'final_conv': 'features'}
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model(name)).eval()
    ours = regzoo.create_model(name).eval()
    ours.load_state_dict(ref.state_dict())
    x = _x()
    extractors = []
    for model in (ref, ours, ours):  # timm's, ours, ours to script; each its own copy (train mode updates BN stats)
        model = copy.deepcopy(model).train(mode == 'train')
        extractors.append(create_feature_extractor(model, return_nodes=nodes))
    extractors[2] = torch.jit.script(extractors[2])
    with torch.no_grad():
        expected, got, scripted = (e(x) for e in extractors)
    assert list(got) == list(scripted) == list(nodes.values())
    for key, value in expected.items():
        assert torch.equal(got[key], value) and torch.equal(scripted[key], value), key


def test_train_mode_with_drop_path_traces_and_trains():
    """Stochastic depth in the traced graph: the same random draws give the eager model's output and gradients."""
    model = _model('regnetx_002', drop_path_rate=0.2, num_classes=10).train()  # BN gammas != 0: branches count
    traced = torch.fx.symbolic_trace(model)
    x = _x()
    torch.manual_seed(3)
    expected = model(x)
    expected.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    got = traced(x)
    assert torch.equal(got, expected)
    got.square().mean().backward()
    for n, p in traced.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
    torch.manual_seed(4)
    assert not torch.equal(traced(x), expected)  # the draws are not baked into the graph
