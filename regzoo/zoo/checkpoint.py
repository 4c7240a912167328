"""``Checkpoint``: the weights a read gives (``regzoo.zoo.loading.read_checkpoint``), in regzoo's key layout, with
the config.json that describes them and the checks of their bytes still running."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from regzoo.zoo.config import config_arch, config_label_names, config_model_args, config_pretrained_cfg, is_hf_config
from regzoo.zoo.hf_processor import PROCESSOR_NAME, read_processor, with_processor
from regzoo.zoo.pretrained_cfg import PretrainedCfg
from regzoo.zoo.reading import Wait


@dataclass(frozen=True)
class Checkpoint:
    """Weights read from a file or directory, converted to our (timm's) key layout."""
    state_dict: Mapping[str, torch.Tensor]
    path: str
    source_format: str
    config: Mapping = field(default_factory=lambda: MappingProxyType({}))  # a saved dir's config.json
    # checks of the file's bytes still running in the background (``read_checkpoint(defer_verification=True)``)
    pending: tuple[Wait, ...] = field(default=(), repr=False, compare=False)
    # the file's metadata says its tensors were all finite when regzoo wrote them, and its digests are among the
    # checks above: once they pass, the NaN/Inf scan is redundant (``regzoo.utils.checksum.finite_when_written``)
    finite_when_written: bool = False

    def verify(self) -> None:
        """Wait for the background checks of the file's bytes (zip CRC, integrity digests); raise what they found.

        Weights must not be used before this returns: ``apply_checkpoint`` calls it first.
        """
        for check in self.pending:
            check()

    @property
    def arch(self) -> str | None:
        return config_arch(self.config)  # timm's hub config names it; HF's does not

    @property
    def label_names(self) -> tuple[str, ...] | None:
        """Class names in classifier order (timm's ``label_names``: top level, or in ``pretrained_cfg``)."""
        return config_label_names(self.config)

    @property
    def model_args(self) -> dict:
        """Build kwargs a timm-style config.json records (in_chans, output_stride, RegNetCfg fields...)."""
        return config_model_args(self.config)

    def num_classes(self, classifier: str = 'head.fc') -> int:
        weight = self.state_dict.get(f'{classifier}.weight')
        return 0 if weight is None or weight.ndim == 0 else weight.shape[0]

    def in_chans(self, first_conv: str = 'stem.conv') -> int | None:
        """Input channels of the first conv (None when the checkpoint has no such weight)."""
        weight = self.state_dict.get(f'{first_conv}.weight')
        return None if weight is None or weight.ndim != 4 else weight.shape[1]

    def pretrained_cfg(self, arch: str) -> PretrainedCfg | None:
        """The eval settings its config.json carries (``regzoo.zoo.config.config_pretrained_cfg``); an HF folder's
        eval transform is its ``preprocessor_config.json`` (``regzoo.zoo.hf_processor``), else the defaults."""
        cfg = config_pretrained_cfg(self.config, arch, self.num_classes())
        if is_hf_config(self.config):
            folder = Path(self.path).parent
            cfg = with_processor(cfg, read_processor(folder), folder / PROCESSOR_NAME)
        return cfg
