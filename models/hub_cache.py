"""Files in torch.hub's cache (``$TORCH_HOME/hub``, ``~/.cache/torch/hub`` by default): the released
weights under ``checkpoints/``, the label lists beside them; each downloaded once.

Torch is imported when a function runs: the prepare scripts read label lists without it.
"""

from __future__ import annotations

import logging
from pathlib import Path

_logger = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A file could not be downloaded (no network); the message names the URL and where to put the file."""


def hub_dir() -> Path:
    """``torch.hub.get_dir()``: honours ``TORCH_HOME`` and ``torch.hub.set_dir``."""
    import torch.hub

    return Path(torch.hub.get_dir())


def cache_path(url: str) -> Path:
    """Where the release file at ``url`` is cached: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return hub_dir() / "checkpoints" / url.rsplit("/", 1)[-1]


def cached_download(url: str, what: str, path: Path | None = None, offline_hint: str = "") -> Path:
    """The local copy of ``url``'s file (at ``path``, default :func:`cache_path`), downloaded only when missing.

    ``what`` names the file in the error (e.g. "the weights of passt_s_swa_p16_128_ap476");
    ``offline_hint`` ends its advice (e.g. another option).
    """
    path = Path(path) if path is not None else cache_path(url)
    if path.is_file():
        return path
    import torch.hub  # its downloader shows a progress bar and writes to a temporary file first

    path.parent.mkdir(parents=True, exist_ok=True)
    _logger.info("Downloading %s to %s", url, path)
    try:
        # downloads to a temporary file and renames it: an interrupted download leaves no partial file
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except Exception as err:  # noqa: BLE001 - any network failure gets the same actionable message
        raise DownloadError(
            f"Could not download {what} from {url} ({err}). Without network access, download that "
            f"file elsewhere and put it at {path}{offline_hint}.") from err
    return path
