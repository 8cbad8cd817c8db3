"""HAT's released models and preprocessed data: names, published links, the data-bin layout, and
the download error."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from hat.corpora import DROPBOX as _DROPBOX
from hat.corpora import TASKS
from hat.errors import HatConfigError

# HAT's released models (name -> published Dropbox link, from HAT's download_model.py): 44
# SubTransformers (SuperTransformer shapes, their architecture in the args) and 4 SuperTransformers.
HAT_MODELS: dict[str, str] = {name: f"{_DROPBOX}{key}/{name}.pt?dl=0" for name, key in (
    ("HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8", "pmfwwg1d1kmfdh5"),
    ("HAT_wmt14ende_raspberrypi@4.0s_bleu@26.9", "ko0i65k1664p74u"),
    ("HAT_wmt14ende_raspberrypi@4.5s_bleu@27.6", "f4y6u9cbcdykeha"),
    ("HAT_wmt14ende_raspberrypi@5.0s_bleu@27.8", "av5vycafxo57x6w"),
    ("HAT_wmt14ende_raspberrypi@6.0s_bleu@28.2", "ywedqumq91a4ekn"),
    ("HAT_wmt14ende_raspberrypi@6.9s_bleu@28.4", "x7iucaotbeald3q"),
    ("HAT_wmt14ende_xeon@137.9ms_bleu@25.8", "bvq3y6igoyxe1t5"),
    ("HAT_wmt14ende_xeon@204.2ms_bleu@27.6", "yg12xz504uw2g1s"),
    ("HAT_wmt14ende_xeon@278.7ms_bleu@27.9", "l5ljas8zyg9ik65"),
    ("HAT_wmt14ende_xeon@340.2ms_bleu@28.1", "fkp61h8jbyt524i"),
    ("HAT_wmt14ende_xeon@369.6ms_bleu@28.2", "3mv3oaddeb132np"),
    ("HAT_wmt14ende_xeon@450.9ms_bleu@28.5", "bjldda9nzj7cpni"),
    ("HAT_wmt14ende_titanxp@57.1ms_bleu@25.8", "71w5t0qidsxqe1e"),
    ("HAT_wmt14ende_titanxp@91.2ms_bleu@27.6", "j0hnmxw6xz6tskh"),
    ("HAT_wmt14ende_titanxp@126.0ms_bleu@27.9", "pyetdnbz1zvcfg5"),
    ("HAT_wmt14ende_titanxp@146.7ms_bleu@28.1", "ixn832oai2k44j9"),
    ("HAT_wmt14ende_titanxp@208.1ms_bleu@28.5", "owpdwmqwpn9jw14"),
    ("HAT_wmt14enfr_raspberrypi@4.3s_bleu@38.8", "ku97fwz1oj1a112"),
    ("HAT_wmt14enfr_raspberrypi@5.3s_bleu@40.1", "9noopb605fqmjpl"),
    ("HAT_wmt14enfr_raspberrypi@5.8s_bleu@40.6", "vmdkh0ctpdac7gr"),
    ("HAT_wmt14enfr_raspberrypi@6.9s_bleu@41.1", "dbo9abn5pnb6qgz"),
    ("HAT_wmt14enfr_raspberrypi@7.8s_bleu@41.4", "x8tsbxbwkk64ejg"),
    ("HAT_wmt14enfr_raspberrypi@9.1s_bleu@41.8", "zbsbl5e96y3t5zl"),
    ("HAT_wmt14enfr_xeon@154.7ms_bleu@39.1", "6xswl0oesuvmqk5"),
    ("HAT_wmt14enfr_xeon@208.8ms_bleu@40.0", "ot3zt8nenda54j7"),
    ("HAT_wmt14enfr_xeon@329.4ms_bleu@41.1", "epe2lvus4l40v9o"),
    ("HAT_wmt14enfr_xeon@394.5ms_bleu@41.4", "qnt2qzkb3i054c6"),
    ("HAT_wmt14enfr_xeon@442.0ms_bleu@41.7", "79zcolb53jbhchk"),
    ("HAT_wmt14enfr_titanxp@69.3ms_bleu@39.1", "hvy255ls277onjw"),
    ("HAT_wmt14enfr_titanxp@94.9ms_bleu@40.0", "rvfv99jbh4n7qys"),
    ("HAT_wmt14enfr_titanxp@132.9ms_bleu@40.7", "u6u3u40pr4f5mzh"),
    ("HAT_wmt14enfr_titanxp@168.3ms_bleu@41.1", "wlbbmnrl61dx4z7"),
    ("HAT_wmt14enfr_titanxp@208.3ms_bleu@41.7", "e41lnsktn5bb2fz"),
    ("HAT_wmt19ende_titanxp@55.7ms_bleu@42.4", "6pokem8orb75ldh"),
    ("HAT_wmt19ende_titanxp@93.2ms_bleu@44.4", "zgcd70pzf1sle4z"),
    ("HAT_wmt19ende_titanxp@134.5ms_bleu@45.4", "mm827rst6a144zy"),
    ("HAT_wmt19ende_titanxp@176.1ms_bleu@46.2", "y0vov0n9zt50n9c"),
    ("HAT_wmt19ende_titanxp@204.5ms_bleu@46.5", "w1si4mgf1e3l8oj"),
    ("HAT_wmt19ende_titanxp@237.8ms_bleu@46.7", "rljih3t0hglp39a"),
    ("HAT_iwslt14deen_titanxp@45.6ms_bleu@33.4", "ntj1gfskish8vz3"),
    ("HAT_iwslt14deen_titanxp@74.5ms_bleu@34.2", "gjq46181s3xbz0k"),
    ("HAT_iwslt14deen_titanxp@109.0ms_bleu@34.5", "fg3r3tk2vjg0diq"),
    ("HAT_iwslt14deen_titanxp@137.8ms_bleu@34.7", "3j5vu5jh71xwec1"),
    ("HAT_iwslt14deen_titanxp@168.8ms_bleu@34.8", "5xy9hdjuc5c6sw5"),
    ("HAT_wmt14ende_super_space0", "pkdddxvvpw9a4vq"),
    ("HAT_wmt14enfr_super_space0", "asegvw9qzpxui6a"),
    ("HAT_wmt19ende_super_space0", "uc0lw6jdep1vazc"),
    ("HAT_iwslt14deen_super_space1", "yv0mn8ns36gxkhs"),
)}
DEFAULT_MODEL = "HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8"  # HAT's default --model-name
DEFAULT_SAVE_PATH = "./downloaded_models"


@dataclass(frozen=True)
class HatData:
    """HAT's binarized data of one task (configs/<task>/get_preprocessed.sh of HAT)."""

    url: str  # published Dropbox link
    archive: str  # the name HAT saves it under
    src: str
    tgt: str


HAT_DATA: dict[str, HatData] = {
    name: HatData(t.hat.url, t.hat.archive, t.src, t.tgt) for name, t in TASKS.items() if t.hat}
MARKER = ".hat_preprocessed.json"  # written into a data-bin this module extracted
SPLITS = ("train", "valid", "test")
CHUNK = 1 << 20


class DownloadError(HatConfigError):
    """A download, copy or check that failed (network, mirror, corrupt or wrong file)."""


# ----------------------------------------------------------------------------- names and URLs
def direct_url(url: str) -> str:
    """A Dropbox share link (``?dl=0``: a web page) as a direct download (``?dl=1``)."""
    return re.sub(r"([?&])dl=0(?=&|$)", r"\1dl=1", url)


def model_url(name: str) -> str:
    """The direct download URL of a released model (its name is checked)."""
    return direct_url(HAT_MODELS[check_model_name(name)])


def check_model_name(name: str) -> str:
    """``name`` if HAT released it; else an error listing the closest names."""
    if name in HAT_MODELS:
        return name
    close = difflib.get_close_matches(name, list(HAT_MODELS), n=5, cutoff=0.6)
    if not close:
        prefix = name.split("@")[0]
        close = [n for n in HAT_MODELS if n.startswith(prefix)][:5]
    hint = (f"closest: {', '.join(close)}" if close else
            "names look like HAT_<task>_<hardware>@<latency>_bleu@<BLEU> or "
            "HAT_<task>_super_space<N>")
    raise HatConfigError(f"--model-name {name}: not one of HAT's {len(HAT_MODELS)} released "
                         f"models; {hint} (python download_model.py --list shows all)")


def check_task(task: str) -> HatData:
    """HAT's preprocessed data of ``task``; else an error listing the tasks."""
    if task not in HAT_DATA:
        raise HatConfigError(f"--task {task}: HAT published preprocessed data only for "
                             f"{', '.join(HAT_DATA)}")
    return HAT_DATA[task]
