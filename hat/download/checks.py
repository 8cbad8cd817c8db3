"""What a fetched file must be: sha256, a loadable checkpoint with no code in its pickle, the
architecture HAT published for its name, a complete data-bin."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hat.corpora import TASKS
from hat.download.catalog import CHUNK, SPLITS, DownloadError
from hat.errors import HatConfigError, UnsafeCheckpointError
from hat.paths import ROOT

if TYPE_CHECKING:
    from hat.space import SearchSpace, SubConfig


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
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


def check_file_sha(path: Path, expected: str | None, what: str) -> None:
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
    check_file_sha(path, sha256, what)
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
    t.hat.model_prefix: (name, t.hat.super_arch) for name, t in TASKS.items() if t.hat}
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
