"""Module and state-dict names are public API: frozen against a snapshot taken from timm's models."""
import json
from pathlib import Path

import pytest
import torch
from snapshots.make_state_dict_snapshot import digest, key_shape_lines

import regzoo

SNAPSHOT = json.loads((Path(__file__).parent / 'snapshots' / 'state_dict_keys.json').read_text())


def test_snapshot_covers_every_arch():
    assert sorted(SNAPSHOT['archs']) == sorted(regzoo.list_models())


@pytest.mark.parametrize('name', regzoo.list_models())
def test_state_dict_keys_and_shapes_frozen(name):
    with torch.device('meta'):
        lines = key_shape_lines(regzoo.create_model(name))
    if name in SNAPSHOT['listed']:
        assert lines == SNAPSHOT['listed'][name]
    assert digest(lines) == SNAPSHOT['archs'][name]


def test_public_module_names():
    model = regzoo.create_model('regnety_002')
    names = dict(model.named_modules())
    for n in ('stem.conv', 'stem.bn', 's1.b1.conv1.conv', 's1.b1.conv2.conv', 's1.b1.se.fc1', 's1.b1.se.fc2',
              's1.b1.conv3.bn', 's1.b1.downsample.conv', 's4.b1', 'final_conv', 'head.fc'):
        assert n in names, n
