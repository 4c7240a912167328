"""File-layout facts, each once: the names regzoo, timm, HF and train.py give weights files, configs and run folders.

Everything that writes or reads such a file (``regzoo.zoo.saving``, ``regzoo.zoo.loading``, ``regzoo.zoo.runs``,
``regzoo.training``) takes the names from here.
"""
from __future__ import annotations

CONFIG_NAME = 'config.json'  # timm's hub config / HF transformers' config, beside the weights
SAFETENSORS_FILE = 'model.safetensors'
PICKLE_FILE = 'pytorch_model.bin'
SAFETENSORS_INDEX = f'{SAFETENSORS_FILE}.index.json'  # over model-0000k-of-0000n.safetensors
BIN_INDEX = f'{PICKLE_FILE}.index.json'  # over pytorch_model-0000k-of-0000n.bin (older HF repos)
INDEX_NAMES = (SAFETENSORS_INDEX, BIN_INDEX)  # safetensors first: it cannot carry code
DIR_FILENAMES = (SAFETENSORS_FILE, PICKLE_FILE)  # safetensors first: it cannot carry code
# the weights files a saved folder or a hub repo is read from, in transformers' order: safetensors (one file,
# then shards) before pickles (one file, then shards)
HUB_FILENAMES = (SAFETENSORS_FILE, SAFETENSORS_INDEX, PICKLE_FILE, BIN_INDEX)
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.pyth', '.torch', '.ckpt')
CONFIG_METADATA_KEY = 'config'  # safetensors metadata: the name of the config.json beside the file that describes it

# a train.py run folder: a save <name> is <name>.safetensors (weights) + <name>.state.pt (training state)
WEIGHTS_SUFFIX = '.safetensors'
RUN_STATE_SUFFIX = '.state.pt'  # train.py's training state beside <name>.safetensors (no weights: for --resume)
RUN_BEST, RUN_LAST, RUN_EMA = 'best', 'last', 'ema'  # the saves of a run
RUN_BEST_FILE, RUN_LAST_FILE, RUN_EMA_FILE = (f'{n}{WEIGHTS_SUFFIX}' for n in (RUN_BEST, RUN_LAST, RUN_EMA))
RUN_ARGS_FILE, RUN_SUMMARY_FILE = 'args.yaml', 'summary.csv'  # the run's flags and its per-epoch rows
# its weights files, in the order a folder path picks them, and what each one is
RUN_WEIGHTS = {RUN_BEST_FILE: 'the best epoch', RUN_LAST_FILE: 'the last epoch', RUN_EMA_FILE: 'the EMA weights'}
# the keys of a training state (``regzoo.training.checkpoint``); a mapping holding RUN_STATE_MARKERS is one
RUN_STATE_KEYS = ('save_id', 'epoch', 'update', 'step_in_epoch', 'optimizer', 'scheduler', 'args', 'rng')
RUN_STATE_MARKERS = ('save_id', 'optimizer', 'scheduler', 'args')
