"""Finding pretrained weights: a local file, the HF hub (cache first, then download), the publisher's URL.

The first step of loading (find -> read + verify -> convert -> fit + apply, docs/design.md): this module returns
a local path and knows where the download caches are; ``regzoo.zoo.loading`` reads what it found.

A warm HF cache is read with a pure file-system lookup first, so a cached weight never costs a network call;
``HF_HUB_OFFLINE=1`` (read at call time, not at import like huggingface_hub does) forbids the network entirely.
Online, a missing weight first costs one quick connection attempt per download host (``unreachable``), so with
no network it fails in about a second instead of after huggingface_hub's retries.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from regzoo.zoo.diagnose import CheckpointError
from regzoo.zoo.layout import HUB_FILENAMES
from regzoo.zoo.pretrained_cfg import PretrainedCfg
from regzoo.zoo.sharded import ShardError, is_index, parse_index

_TRUE = ('1', 'ON', 'YES', 'TRUE')
DEFAULT_PROBE_TIMEOUT = 1.0  # seconds a download host gets to accept a connection (REGZOO_CONNECT_TIMEOUT)


class WeightsUnavailableError(FileNotFoundError):
    """No source of a pretrained weight could be reached (offline and not cached, or every download failed).

    Its text lists every place looked in and the fix for Python callers; ``command_line_message(flag)`` is the
    one-line form the command lines print (``regzoo.utils.runtime.error_exit`` and train.py use it), whose fix
    is a flag.
    """

    def __init__(self, message: str, weight: str | None = None, offline: bool = False):
        super().__init__(message)
        self.weight, self.offline = weight, offline

    def command_line_message(self, flag: str = '--checkpoint', model: str | None = None) -> str:
        """'--pretrained: no weights for NAME found offline; pass FLAG PATH ... or fill the HF cache (...)'."""
        name = model or self.weight or 'the model'
        return (f'--pretrained: no weights for {name} found{" offline" if self.offline else ""}; pass {flag} PATH '
                '(a local weights file or folder), or fill the HF cache (`hf download` the weight where there is '
                'network and copy the cache here)')


def hub_cache_dir() -> Path:
    """The HF hub cache as the environment says now: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    env = os.environ
    home = env.get('HF_HOME') or os.path.join(env.get('XDG_CACHE_HOME') or '~/.cache', 'huggingface')
    return Path(env.get('HF_HUB_CACHE') or env.get('HUGGINGFACE_HUB_CACHE') or os.path.join(home, 'hub')).expanduser()


def url_cache_path(url: str) -> Path:
    """Where URL downloads are kept: torch.hub's checkpoints folder (TORCH_HOME), by file name."""
    return Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(url.split('?')[0])


def hub_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """The HF hub cache a call uses: ``cache_dir`` (timm's ``create_model(cache_dir=)``), else ``hub_cache_dir()``."""
    return Path(cache_dir).expanduser() if cache_dir else hub_cache_dir()


def is_download(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in a default download cache (the HF hub cache or torch.hub's checkpoints folder), so
    an error about it can say: delete it and fetch it again."""
    path = Path(os.path.abspath(path))
    caches = (hub_cache_dir(), url_cache_path('x').parent)
    return any(path.is_relative_to(os.path.abspath(cache)) for cache in caches)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE as set now (huggingface_hub itself reads them once, at import)."""
    from huggingface_hub import constants
    value = os.environ.get('HF_HUB_OFFLINE') or os.environ.get('TRANSFORMERS_OFFLINE') or ''
    return value.upper() in _TRUE or constants.HF_HUB_OFFLINE


def _probe_target(url: str) -> tuple[str, int] | None:
    """The (host, port) a download of ``url`` connects to first: its proxy's when the environment sets one
    (as urllib and httpx read it), else its own; None for URLs with no network host (file://)."""
    import urllib.parse
    import urllib.request
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get('all')
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        p = urllib.parse.urlsplit(proxy if '://' in proxy else f'http://{proxy}')
        if p.hostname:
            return p.hostname, p.port or (443 if p.scheme == 'https' else 80)
    return parts.hostname, parts.port or (443 if parts.scheme == 'https' else 80)


def probe_timeout() -> float:
    """Seconds a download host gets to accept a connection: REGZOO_CONNECT_TIMEOUT, default 1.0."""
    try:
        return float(os.environ.get('REGZOO_CONNECT_TIMEOUT') or DEFAULT_PROBE_TIMEOUT)
    except ValueError:
        return DEFAULT_PROBE_TIMEOUT


def unreachable(urls: list[str], timeout: float | None = None) -> dict[str, str]:
    """URL -> why its host cannot be reached now, for each URL whose host does not accept a TCP connection.

    One connection attempt per host (or proxy), all at once in daemon threads, bounded by ``timeout`` seconds
    in total, name lookup included (a resolver that never answers cannot stall the caller). This runs before
    any download so that, with no network, a missing weight fails at once instead of after huggingface_hub's
    retries (~24 s) or an urllib download with no timeout.
    """
    import socket
    import threading
    import time
    timeout = probe_timeout() if timeout is None else timeout
    targets = {url: _probe_target(url) for url in urls}
    errors: dict[tuple[str, int], str | None] = {}

    def probe(target: tuple[str, int]) -> None:
        try:
            socket.create_connection(target, timeout=timeout).close()
            errors[target] = None
        except OSError as e:
            errors[target] = f'{type(e).__name__}: {e}' if str(e) else type(e).__name__

    threads = [threading.Thread(target=probe, args=(t,), daemon=True, name=f'regzoo-probe-{t[0]}')
               for t in dict.fromkeys(t for t in targets.values() if t)]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    found = {}
    for url, target in targets.items():
        if target is None:
            continue
        where = f'{target[0]}:{target[1]}'
        if target not in errors:
            found[url] = (f'no answer from {where} within {timeout:g} s; '
                          'set REGZOO_CONNECT_TIMEOUT=SECONDS to wait longer')
        elif errors[target]:
            found[url] = f'cannot connect to {where}: {errors[target]}'
    return found


def _hub_names(cfg: PretrainedCfg) -> tuple[str, ...]:
    return (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILENAMES


def _shard_names(index: str | os.PathLike) -> list[str]:
    """The shard files a (cached or downloaded) index lists; [] when it is unreadable (reading it later says why)."""
    if not is_index(index):
        return []
    try:
        return [shard.name for shard in parse_index(index).shards]
    except ShardError:
        return []


def _hub_cached(cfg: PretrainedCfg, attempts: list[str], cache_dir: str | os.PathLike | None = None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache
    cache, names = hub_cache(cache_dir), _hub_names(cfg)
    for name in names:
        # the cache first, for every candidate, by a pure file-system lookup: even hf_hub_download(
        # local_files_only=True) builds request headers, which (huggingface_hub 2.x) may fetch from the Hub
        if isinstance(found := try_to_load_from_cache(cfg.hf_hub_id, name, cache_dir=cache), str):
            missing = [shard for shard in _shard_names(found)
                       if not isinstance(try_to_load_from_cache(cfg.hf_hub_id, shard, cache_dir=cache), str)]
            if not missing:
                return Path(found)
            attempts.append(f'HF hub repo {cfg.hf_hub_id!r}: {name} is in the cache {cache}, but not its shard(s) '
                            + ', '.join(missing))
            return None
    attempts.append(f'HF hub repo {cfg.hf_hub_id!r} ({", ".join(names)}): not in the cache {cache}')
    return None


def _hub_download(cfg: PretrainedCfg, attempts: list[str], cache_dir: str | os.PathLike | None = None) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    names = _hub_names(cfg)
    for name in names:
        try:
            found = Path(hf_hub_download(cfg.hf_hub_id, name, cache_dir=hub_cache(cache_dir)))
            for shard in _shard_names(found):  # a shard index: the shards it lists, into the same snapshot
                hf_hub_download(cfg.hf_hub_id, shard, cache_dir=hub_cache(cache_dir))
            return found
        except LocalEntryNotFoundError as e:  # the hub could not be reached
            attempts.append(f'HF hub download of {cfg.hf_hub_id}/{name} failed: {e}')
            return None
        except EntryNotFoundError:  # reached, but the repo has no such file: try the next name
            continue
        except OSError as e:  # HTTP, connection and repo errors are all OSErrors in huggingface_hub
            attempts.append(f'HF hub download of {cfg.hf_hub_id}/{name} failed: {type(e).__name__}: {e}')
            return None
    attempts.append(f'HF hub repo {cfg.hf_hub_id!r} has none of {", ".join(names)}')
    return None


def _url_dst(cfg: PretrainedCfg, cache_dir: str | os.PathLike | None = None) -> Path:
    # cache_dir, as timm's (torch.hub's model_dir): the file itself goes there
    return Path(cache_dir).expanduser() / url_cache_path(cfg.url).name if cache_dir else url_cache_path(cfg.url)


def _url_cached(cfg: PretrainedCfg, attempts: list[str], cache_dir: str | os.PathLike | None = None) -> Path | None:
    dst = _url_dst(cfg, cache_dir)
    if dst.is_file():
        return dst
    attempts.append(f'URL {cfg.url}: not in the cache {dst}')
    return None


def _url_download(cfg: PretrainedCfg, attempts: list[str], cache_dir: str | os.PathLike | None = None) -> Path | None:
    dst = _url_dst(cfg, cache_dir)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(cfg.url, str(dst), hash_prefix=cfg.sha256, progress=False)
    except RuntimeError as e:
        if 'invalid hash value' in str(e):  # torch.hub already removed the bad download
            raise CheckpointError(f'{cfg.name}: the file downloaded from {cfg.url} fails its sha256 check: {e}. '
                                  'The server copy changed or the transfer was corrupted; nothing was kept') from e
        attempts.append(f'URL download {cfg.url} failed: {e}')
        return None
    except OSError as e:
        attempts.append(f'URL download {cfg.url} failed: {type(e).__name__}: {e}')
        return None
    return dst


def fetch_pretrained(cfg: PretrainedCfg, cache_dir: str | os.PathLike | None = None) -> tuple[Path, str | None]:
    """The local path of ``cfg``'s weights and their layout (None: detect), fetching them if needed.

    Order: ``cfg.file``; the caches (HF hub, then the URL's); then, unless offline, one quick connection
    attempt to each download host (``unreachable``); then the downloads from the hosts that answered: the
    HF hub, then the URL (with its sha256 check). With no network this fails within ``probe_timeout()``.
    ``cache_dir`` (timm's ``create_model(cache_dir=)``) replaces the HF hub cache and the URL download folder.
    """
    if cfg.file:
        path = Path(cfg.file).expanduser()
        if not path.exists():
            raise FileNotFoundError(f'{cfg.name}: pretrained file {path} (pretrained_cfg_overlay file=) does not exist')
        return path, None
    if not (cfg.hf_hub_id or cfg.url):
        raise WeightsUnavailableError(f'{cfg.name}: no source to load from: the cfg has no hf_hub_id, url or file',
                                      cfg.name)
    offline, attempts = hub_offline(), []
    # every cache before any network: a cached weight never waits on a connection
    if cfg.hf_hub_id and (path := _hub_cached(cfg, attempts, cache_dir)):
        return path, None
    if cfg.url and (path := _url_cached(cfg, attempts, cache_dir)):
        return path, cfg.source_format
    if not offline:
        from huggingface_hub import constants
        hub_url = constants.ENDPOINT
        down = unreachable(([hub_url] if cfg.hf_hub_id else []) + ([cfg.url] if cfg.url else []))
        if cfg.hf_hub_id:
            if hub_url in down:
                attempts.append(f'HF hub download of {cfg.hf_hub_id}: not tried, {hub_url} is unreachable '
                                f'({down[hub_url]})')
            elif path := _hub_download(cfg, attempts, cache_dir):
                return path, None
        if cfg.url:
            if cfg.url in down:
                attempts.append(f'URL download {cfg.url}: not tried, the host is unreachable ({down[cfg.url]})')
            elif path := _url_download(cfg, attempts, cache_dir):
                return path, cfg.source_format
    fix = (f'run `hf download {cfg.hf_hub_id}` on a machine with network and copy its HF cache to '
           f'{hub_cache(cache_dir)}, or ' if cfg.hf_hub_id else '')
    raise WeightsUnavailableError(
        f'{cfg.name}: pretrained weights not found' + (' offline (HF_HUB_OFFLINE is set)' if offline else '') + ':\n  '
        + '\n  '.join(attempts) + f'\nTo fix: {fix}pass pretrained_cfg_overlay=dict(file=PATH) or '
        'checkpoint_path=PATH with a local weights file or directory.', cfg.name, offline)
