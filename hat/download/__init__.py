"""Fetch HAT's released models and preprocessed data, as HAT's own commands do.

    python download_model.py --model-name=HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8
    python download_model.py --download-all            # all 48 (--save-path ./downloaded_models)
    bash configs/<task>/get_preprocessed.sh            # = python -m hat.download data --task <task>

Models land in ``<save-path>/<name>.pt``; a task's binarized data (HAT's tgz) is extracted into
``data/<task>/data-bin``, the folder this project's configs read. Both commands take
``--mirror DIR`` to copy the files from a local folder instead of the network (``DIR/<name>.pt``,
``DIR/<archive>.tgz``, optionally with a ``.sha256`` file beside each), write atomically (a
temporary file or folder, renamed when complete and checked: nothing half-written ever appears
under the final name), check what they got (bytes against Content-Length; a model must be a
loadable checkpoint, not an HTML page, whose pickle asks to run no code (:mod:`hat.compat`'s
restricted unpickler) and with the architecture HAT published for its name
(:func:`check_architecture`); the data must be a fairseq data-bin of the language pair; sha256
when one is known) and skip what is already there and valid (``--force`` fetches again).

The command lines are in :mod:`hat.download.cli` (``python -m hat.download``). Exit status: 0
when everything is in place, 1 when a download or check failed (with
``--download-all`` the others still run), 2 for bad input (unknown name or task).
"""

from __future__ import annotations

import dataclasses
import difflib
import gzip
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from hat.atomic import atomic_path, atomic_write_json
from hat.errors import HatConfigError, UnsafeCheckpointError
from hat.paths import ROOT

if TYPE_CHECKING:
    from hat.space import SearchSpace, SubConfig

_DROPBOX = "https://www.dropbox.com/s/"

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
    "wmt14.en-de": HatData(f"{_DROPBOX}axfwl1vawper8yk/wmt16_en_de.preprocessed.tgz?dl=0",
                           "wmt16_en_de.preprocessed.tgz", "en", "de"),
    "wmt14.en-fr": HatData(f"{_DROPBOX}mrs8efjrrnc61xi/wmt14_en_fr.preprocessed.tgz?dl=0",
                           "wmt14_en_fr.preprocessed.tgz", "en", "fr"),
    "wmt19.en-de": HatData(f"{_DROPBOX}q2st4ox2na9z5z2/wmt19_en_de.preprocessed.tgz?dl=0",
                           "wmt19_en_de.preprocessed.tgz", "en", "de"),
    "iwslt14.de-en": HatData(f"{_DROPBOX}t5dqiamjdzahhfc/iwslt14_de_en.preproessed.tgz?dl=0",
                             "iwslt14_de_en.preprocessed.tgz", "de", "en"),
}
MARKER = ".hat_preprocessed.json"  # written into a data-bin this module extracted
SPLITS = ("train", "valid", "test")
_CHUNK = 1 << 20


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


# ----------------------------------------------------------------------------- checks
def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def read_sha256(path: str | os.PathLike) -> str:
    """The digest of a ``.sha256`` file (``<hex>`` or ``<hex>  <file name>``, sha256sum's form)."""
    words = Path(path).read_text(encoding="utf-8", errors="replace").split()
    digest = words[0].lower() if words else ""
    return check_sha256(digest, str(path))


def check_sha256(digest: str, where: str = "--sha256") -> str:
    """A 64-digit hex sha256 in lower case."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", digest or ""):
        raise HatConfigError(f"{where}: {digest!r} is not a sha256 digest (64 hex digits)")
    return digest.lower()


def _check_sha(path: Path, expected: str | None, what: str) -> None:
    if expected is not None:
        got = file_sha256(path)
        if got != expected:
            raise DownloadError(f"{what}: sha256 {got} does not match the expected {expected}")


def check_model_file(path: str | os.PathLike, what: str, sha256: str | None = None,
                     name: str | None = None) -> None:
    """Raise :class:`DownloadError` unless ``path`` is a fairseq checkpoint (legacy pickle or
    torch zip, with a model state dict and model args) with the expected sha256, if given, and,
    with ``name``, the architecture HAT published for that model (:func:`check_architecture`).
    A file whose pickle asks to run code is refused unread (nothing of it runs)."""
    from hat.checkpoint import checkpoint_args, read_checkpoint

    path = Path(path)
    _check_sha(path, sha256, what)
    try:
        state = read_checkpoint(path)
        args = checkpoint_args(state, path)
    except UnsafeCheckpointError as e:
        raise DownloadError(f"{what}: refused to load it: {e.reason}") from None
    except HatConfigError as e:
        raise DownloadError(f"{what}: {str(e).removeprefix(f'{path}: ')}") from None
    if name is not None:
        check_architecture(name, args, state["model"], what)


# ----------------------------------------------------------------------------- architectures
CONFIGS = ROOT / "configs"  # configs/<task>/subtransformer/*.yml
# the <task> part of HAT's model names -> (task, arch of its SuperTransformer)
RELEASED_TASKS: dict[str, tuple[str, str]] = {
    "wmt14ende": ("wmt14.en-de", "transformersuper_wmt_en_de"),
    "wmt14enfr": ("wmt14.en-fr", "transformersuper_wmt_en_fr"),
    "wmt19ende": ("wmt19.en-de", "transformersuper_wmt19_en_de"),
    "iwslt14deen": ("iwslt14.de-en", "transformersuper_iwslt_de_en"),
}
SUPER_ARCH_KEYS = ("encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim",
                   "decoder_ffn_embed_dim", "encoder_layers", "decoder_layers",
                   "encoder_attention_heads", "decoder_attention_heads", "qkv_dim")


@dataclass(frozen=True)
class ReleasedArchitecture:
    """What HAT published for one released model: every released checkpoint has its task's
    SuperTransformer shapes; a SubTransformer also runs one SubTransformer of it."""

    name: str
    task: str
    arch: str
    space: SearchSpace
    is_super: bool
    sub: SubConfig | None = None  # the SubTransformer (None: a SuperTransformer, or no YAML)
    sub_source: str | None = None  # the YAML it was read from


def released_architecture(name: str) -> ReleasedArchitecture | None:
    """The published architecture of HAT's model ``name`` (None for a name of no HAT task):
    the task's search space (space0 for WMT, space1 for IWSLT) and, for a SubTransformer, its
    ``configs/<task>/subtransformer/<name>.yml``."""
    from hat.space import IWSLT_SPACE1, WMT_SPACE0, read_subtransformer_yaml

    m = re.fullmatch(r"HAT_([a-z0-9]+)_(.+)", name)
    if m is None or m.group(1) not in RELEASED_TASKS:
        return None
    task, arch = RELEASED_TASKS[m.group(1)]
    space = IWSLT_SPACE1 if task.startswith("iwslt") else WMT_SPACE0
    if m.group(2).startswith("super_space"):
        return ReleasedArchitecture(name, task, arch, space, True)
    yml = CONFIGS / task / "subtransformer" / f"{name}.yml"
    if not yml.is_file():  # an installation without the configs: the SuperTransformer shapes only
        return ReleasedArchitecture(name, task, arch, space, False)
    return ReleasedArchitecture(name, task, arch, space, False, read_subtransformer_yaml(yml),
                                f"configs/{task}/subtransformer/{name}.yml")


def check_architecture(name: str, args: Any, model_state: dict[str, Any], what: str) -> None:
    """Raise :class:`DownloadError` (naming ``what``, the key, the value found and the one HAT
    published) unless a checkpoint's args and weights have the architecture of HAT's ``name``:
    a SuperTransformer arch, the task's SuperTransformer dims (args and weight shapes) and, for a
    SubTransformer whose args hold its ``*_subtransformer`` keys, the published SubTransformer."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    released = released_architecture(name)
    if released is None:
        return

    def refuse(detail: str) -> None:
        raise DownloadError(f"{what}: not HAT's {name}: {detail}")

    arch = getattr(args, "arch", None)
    if ARCH_MODEL_NAME_REGISTRY.get(arch) != "transformersuper":
        refuse(f"its args have arch = {arch}, HAT's has {released.arch} (a SuperTransformer)")
    for key in SUPER_ARCH_KEYS:
        found, expected = getattr(args, key, None), getattr(released.space, key)
        opt = key.replace("_", "-")
        if found is None:
            refuse(f"its args hold no {opt} (HAT's has {opt} = {expected})")
        if found != expected:
            refuse(f"its args have {opt} = {found}, HAT's has {expected}")
    for key, found, evidence in weight_dims(model_state):
        expected = getattr(released.space, key)
        if found != expected:
            refuse(f"its weights have {key.replace('_', '-')} = {found} ({evidence}), HAT's "
                   f"has {expected}")
    if released.sub is not None:
        _check_sub_args(released, args, refuse)


def _check_sub_args(released: ReleasedArchitecture, args: Any,
                    refuse: Callable[[str], None]) -> None:
    from hat.space import SUB_YAML_KEYS, SubConfig

    values = {f: getattr(args, k.replace("-", "_"), None) for f, k in SUB_YAML_KEYS.items()}
    if all(v is None for v in values.values()):
        return  # the SubTransformer is given at test time (configs/<task>/test.sh <yml>)
    try:
        found = SubConfig.from_dict(values, source="its args")
    except HatConfigError as e:
        refuse(f"{e} (HAT's runs {released.sub_source})")
        return
    for field in dataclasses.fields(SubConfig):  # layer numbers before their per-layer lists
        key = SUB_YAML_KEYS[field.name]
        mine, theirs = getattr(found, field.name), getattr(released.sub, field.name)
        if mine != theirs:
            refuse(f"its args have {key} = {_listed(mine)}, HAT's has {_listed(theirs)} "
                   f"({released.sub_source})")


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def weight_dims(model_state: dict[str, Any]) -> list[tuple[str, int, str]]:
    """SuperTransformer dims read off a state dict's shapes, ``(key, value, evidence)``: embed
    dims (``*.embed_tokens.weight``), layer numbers, every layer's FFN dim (``fc1.weight``) and
    Q/K/V width (``self_attn.in_proj_weight``)."""
    dims: list[tuple[str, int, str]] = []

    def shape(key: str) -> tuple[int, ...] | None:
        t = model_state.get(key)
        return tuple(t.shape) if t is not None and hasattr(t, "shape") else None

    for side in ("encoder", "decoder"):
        emb = shape(f"{side}.embed_tokens.weight")
        if emb is not None and len(emb) == 2:
            dims.append((f"{side}_embed_dim", emb[1], f"{side}.embed_tokens.weight {list(emb)}"))
        prefix = re.compile(rf"{side}\.layers\.(\d+)\.")
        layers = sorted({int(m.group(1)) for k in model_state if (m := prefix.match(k))})
        dims.append((f"{side}_layers", len(layers), f"{side}.layers.0-{len(layers) - 1}"
                     if layers else f"no {side}.layers.*"))
        for i in layers:
            fc1 = shape(f"{side}.layers.{i}.fc1.weight")
            if fc1 is not None and len(fc1) == 2:
                dims.append((f"{side}_ffn_embed_dim", fc1[0],
                             f"{side}.layers.{i}.fc1.weight {list(fc1)}"))
            qkv = shape(f"{side}.layers.{i}.self_attn.in_proj_weight")
            if qkv is not None and len(qkv) == 2:
                dims.append(("qkv_dim", qkv[0] // 3,
                             f"{side}.layers.{i}.self_attn.in_proj_weight {list(qkv)} = 3 x Q/K/V"))
    return dims


def databin_missing(folder: str | os.PathLike, src: str, tgt: str) -> list[str]:
    """The files a fairseq data-bin of ``src``-``tgt`` needs that ``folder`` lacks: the two
    dictionaries and ``.bin``/``.idx`` of train, valid and test for both languages."""
    folder = Path(folder)
    missing = [f"dict.{lang}.txt" for lang in (src, tgt) if not (folder / f"dict.{lang}.txt")
               .is_file()]
    for split in SPLITS:
        for lang in (src, tgt):
            for ext in ("bin", "idx"):
                names = (f"{split}.{src}-{tgt}.{lang}.{ext}", f"{split}.{tgt}-{src}.{lang}.{ext}")
                if not any((folder / n).is_file() for n in names):
                    missing.append(names[0])
    return missing


# ----------------------------------------------------------------------------- transfer
def _progress(total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                dynamic_ncols=True, disable=None, leave=False)


def _copy_stream(src: BinaryIO, dst: BinaryIO, total: int | None, desc: str) -> int:
    done = 0
    with _progress(total, desc) as bar:
        for block in iter(lambda: src.read(_CHUNK), b""):
            dst.write(block)
            done += len(block)
            bar.update(len(block))
    return done


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def fetch_url(url: str, dest: str | os.PathLike, check: Callable[[Path], None], what: str,
              timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically (progress bar, Content-Length check), running
    ``check`` on the complete temporary file before it is renamed to ``dest``."""
    dest = Path(dest)
    hint = (f"without network access, download it elsewhere, put it into a folder as {dest.name} "
            "and run again with --mirror <folder>")
    request = urllib.request.Request(url, headers={"User-Agent": "hat-download/0.1"})
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp, open(tmp, "wb") as f:
                if resp.headers.get_content_type() == "text/html":
                    raise DownloadError(f"{what}: {url} answered with a web page instead of the "
                                        f"file (a moved or rate-limited link?); {hint}")
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                got = _copy_stream(resp, f, total, dest.name)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise DownloadError(f"{what}: cannot download {url}: {_reason(e)}; {hint}") from None
        if total is not None and got != total:
            raise DownloadError(f"{what}: the download of {url} stopped after {got:,} of "
                                f"{total:,} bytes (connection dropped); run the command again")
        check(tmp)
    return dest


def copy_file(src: str | os.PathLike, dest: str | os.PathLike, check: Callable[[Path], None]
              ) -> Path:
    """Copy ``src`` to ``dest`` atomically (progress bar), checking the copy before renaming."""
    src, dest = Path(src), Path(dest)
    with atomic_path(dest) as tmp:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            _copy_stream(fi, fo, src.stat().st_size, dest.name)
        check(tmp)
    return dest


def _remove_stale(folder: Path, pattern: str) -> None:
    """Remove leftovers of a killed run (temporary files/folders this module names)."""
    for p in folder.glob(pattern) if folder.is_dir() else ():
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- models
def download_model(name: str, save_path: str | os.PathLike = DEFAULT_SAVE_PATH,
                   mirror: str | os.PathLike | None = None, sha256: str | None = None,
                   force: bool = False, timeout: float = 60.0, url: str | None = None,
                   log: Callable[[str], None] = print) -> tuple[Path, str]:
    """Put released model ``name`` into ``save_path/<name>.pt``; returns (path, what happened:
    ``present``, ``copied`` or ``downloaded``). ``mirror``: copy ``<mirror>/<name>.pt`` instead
    of downloading (its ``<name>.pt.sha256``, if present, is checked); ``url`` overrides the
    table's."""
    check_model_name(name)
    url = direct_url(url or HAT_MODELS[name])
    dest = Path(save_path) / f"{name}.pt"
    _remove_stale(dest.parent, f".{_glob_escape(dest.name)}.*.tmp")
    expected = check_sha256(sha256) if sha256 else None
    src = Path(mirror) / dest.name if mirror is not None else None
    if expected is None and src is not None and Path(f"{src}.sha256").is_file():
        expected = read_sha256(f"{src}.sha256")
    if dest.is_file() and not force:
        try:
            check_model_file(dest, str(dest), expected, name)
            log(f"| present    {dest} (valid; --force to fetch again)")
            return dest, "present"
        except DownloadError as e:
            log(f"| replacing  {dest}: {str(e).removeprefix(f'{dest}: ')}")

    def check(tmp: Path) -> None:
        check_model_file(tmp, f"{name} (from {src or url})", expected, name)

    if src is not None:
        if not src.is_file():
            raise DownloadError(f"{name}: {src} not found in the mirror folder (--mirror "
                                f"{mirror}); put HAT's {dest.name} there, or leave out --mirror "
                                f"to download it from {url}")
        copy_file(src, dest, check)
        log(f"| copied     {dest} (from {src}, checked)")
        return dest, "copied"
    fetch_url(url, dest, check, name, timeout)
    log(f"| downloaded {dest} (from {url}, checked)")
    return dest, "downloaded"


def _glob_escape(name: str) -> str:
    """``name`` with glob wildcards escaped (HAT's names hold none but '@' and '.')."""
    return re.sub(r"([*?\[])", r"[\1]", name)


# ----------------------------------------------------------------------------- data
def fetch_data(task: str, out: str | os.PathLike | None = None,
               mirror: str | os.PathLike | None = None, sha256: str | None = None,
               force: bool = False, timeout: float = 60.0, keep_archive: bool = True,
               url: str | None = None, log: Callable[[str], None] = print) -> Path:
    """Put HAT's binarized data of ``task`` into ``out`` (default ``data/<task>/data-bin``).

    The tgz is downloaded beside ``out`` (or read from ``mirror``), checked (sha256 when given or
    in ``<archive>.sha256`` of the mirror), extracted safely into a temporary folder, checked to
    be a fairseq data-bin of the task's language pair and renamed to ``out``. A data-bin this
    function extracted before is kept (``force`` replaces it); any other existing ``out`` is
    an error (it may be this project's own preprocessing, whose dictionaries differ from HAT's).
    """
    spec = check_task(task)
    url = direct_url(url or spec.url)
    out = Path(out) if out is not None else Path("data") / task / "data-bin"
    expected = check_sha256(sha256) if sha256 else None
    if out.exists() and not force:
        _check_existing(out, spec)
        log(f"| present    {out} (HAT's {task} data-bin, complete; --force to fetch again)")
        return out
    archive, downloaded = _archive(spec, url, out, mirror, expected, force, timeout, log)
    extract_databin(archive, out, spec.src, spec.tgt,
                    {"task": task, "archive": archive.name, "source": str(mirror or url)})
    log(f"| extracted  {out} (HAT's {task} data-bin: {spec.src}-{spec.tgt}, checked)")
    if downloaded and not keep_archive:
        archive.unlink()
    elif downloaded:
        log(f"| kept       {archive} (delete it to save space, or use --delete-archive)")
    return out


def _check_existing(out: Path, spec: HatData) -> None:
    missing = databin_missing(out, spec.src, spec.tgt) if out.is_dir() else ["(not a folder)"]
    if not (out / MARKER).is_file():
        lacks = f"; it lacks {_listing(missing)}" if missing else ""
        raise HatConfigError(
            f"{out} already exists but was not extracted from HAT's archive (made by "
            f"preprocess.sh or by hand?){lacks}. HAT's released models need HAT's dictionaries: "
            "pass --force to replace it with HAT's data, or --out DIR to extract elsewhere")
    if missing:
        raise HatConfigError(f"{out} is incomplete: it lacks {_listing(missing)}; run again "
                             "with --force to extract it again")


def _listing(names: Sequence[str], n: int = 6) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _archive(spec: HatData, url: str, out: Path, mirror: str | os.PathLike | None,
             expected: str | None, force: bool, timeout: float, log: Callable[[str], None]
             ) -> tuple[Path, bool]:
    """(path of the checked tgz, whether it was downloaded here)."""
    def check(path: Path) -> None:
        with open(path, "rb") as f:
            head = f.read(2)
        if head != b"\x1f\x8b":
            kind = "a web page" if head.startswith(b"<") else f"starts with {head!r}"
            raise DownloadError(f"{path.name}: not a gzip-compressed tar archive ({kind})")
        _check_sha(path, expected, str(path))

    if mirror is not None:
        names = dict.fromkeys([spec.archive, Path(url.split("?")[0]).name])
        found = [Path(mirror) / n for n in names if (Path(mirror) / n).is_file()]
        if not found:
            raise DownloadError(f"{' or '.join(names)} not found in the mirror folder (--mirror "
                                f"{mirror}); put HAT's archive there, or leave out --mirror to "
                                f"download it from {url}")
        src = found[0]
        if expected is None and Path(f"{src}.sha256").is_file():
            expected = read_sha256(f"{src}.sha256")
        check(src)
        log(f"| using      {src} (mirror)")
        return src, False
    dest = out.parent / spec.archive
    _remove_stale(dest.parent, f".{_glob_escape(dest.name)}.*.tmp")
    if dest.is_file() and not force:
        check(dest)
        log(f"| using      {dest} (downloaded before)")
        return dest, True
    fetch_url(url, dest, check, spec.archive, timeout)
    log(f"| downloaded {dest} (from {url})")
    return dest, True


def _member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    """The member's path relative to the target, refusing links, special files and paths that
    lead outside the target (None for the archive's root entry)."""
    if member.issym() or member.islnk():
        raise DownloadError(f"{archive}: refusing the link {member.name} -> {member.linkname} "
                            "(only plain files and folders are extracted)")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive}: refusing {member.name}: not a plain file or folder")
    path = PurePosixPath(member.name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", member.name):
        raise DownloadError(f"{archive}: refusing {member.name}: its path leads outside the "
                            "folder it is extracted into")
    parts = [p for p in path.parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def _check_gzip_complete(archive: Path) -> None:
    """Decompress a gzip file to its end: a truncated one raises EOFError (tarfile alone may take
    a cut that falls between two members for the end of the archive)."""
    with open(archive, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return
    with gzip.open(archive, "rb") as g:
        while g.read(_CHUNK):
            pass


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a tar(.gz) into ``dest``: plain files and folders only, every path inside
    ``dest`` (an unsafe member stops the extraction with an error)."""
    archive, dest = Path(archive), Path(dest)
    try:
        _check_gzip_complete(archive)
        with tarfile.open(archive, "r|*") as tf, _progress(None, f"extract {archive.name}") as bar:
            for member in tf:
                rel = _member_path(member, archive)
                if rel is None:
                    continue
                target = dest.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None  # a regular file
                with src, open(target, "wb") as f:
                    shutil.copyfileobj(src, f, _CHUNK)
                bar.update(member.size)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DownloadError(f"{archive}: cannot extract it ({_reason(e)}); the archive is "
                            "truncated or corrupt: delete it (or run with --force) to fetch it "
                            "again") from None


def _databin_root(top: Path, src: str) -> Path:
    """The extracted folder holding the data-bin: the one with dict.<src>.txt, else ``top``
    after descending through single subfolders (an archive with one top-level folder)."""
    found = sorted({p.parent for p in top.rglob(f"dict.{src}.txt")})
    if len(found) == 1:
        return found[0]
    root = top
    while True:
        entries = list(root.iterdir())
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        root = entries[0]


def extract_databin(archive: str | os.PathLike, out: str | os.PathLike, src: str, tgt: str,
                    info: dict[str, Any] | None = None) -> Path:
    """Extract ``archive`` into a temporary folder beside ``out``, check it is a fairseq
    data-bin of ``src``-``tgt`` and rename it to ``out`` (replacing an old ``out``)."""
    archive, out = Path(archive), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out.parent, f".{_glob_escape(out.name)}.extracting.*")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.extracting.", dir=out.parent))
    try:
        safe_extract(archive, staging / "x")
        top = staging / "x"
        if not top.is_dir():
            raise DownloadError(f"{archive}: the archive is empty")
        root = _databin_root(top, src)
        missing = databin_missing(root, src, tgt)
        if missing:
            have = sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file())
            raise DownloadError(
                f"{archive}: not a fairseq data-bin of {src}-{tgt}: {root.relative_to(staging)} "
                f"lacks {_listing(missing)} (the archive holds {len(have)} files"
                + (f": {_listing(have)})" if have else ")"))
        atomic_write_json(root / MARKER, info or {"archive": archive.name})
        if out.exists():
            old = staging / "old"
            os.replace(out, old)
        os.replace(root, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
