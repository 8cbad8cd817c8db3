"""The one place where fairseq is adapted to recent torch.

Every checkpoint is a pickle, and unpickling can run any code the file names. Nothing here
unpickles with Python's permissive loader: :func:`load_checkpoint_file` and the ``torch`` that
fairseq's ``checkpoint_utils`` and ``distributed.utils`` get (fairseq loads checkpoints in the
first and, in distributed training, unpickles the checkpoint that rank 0 broadcasts in the
second) unpickle with :class:`RestrictedUnpickler`, whose ``find_class`` resolves only what a
fairseq or HAT checkpoint holds (:func:`allowed_globals`: containers, tensors and storages,
numpy arrays, argparse's Namespace, omegaconf's configs). A file that asks for anything else
(``os.system``, ``builtins.eval``, a class of some installed package) is refused before any of
it runs, with :class:`~hat.errors.UnsafeCheckpointError` naming the file and what it asked for.
(torch >= 2.6's ``weights_only=True`` refuses the Namespace and omegaconf objects inside every
fairseq checkpoint, and cannot stand in for fairseq 0.8's classes.)

Checkpoints written by HAT's fairseq 0.8 pickle objects of modules that fairseq 0.12 no longer has
(``extra_state['train_meters']`` holds ``fairseq.meters.AverageMeter``s): every fairseq class a
checkpoint names is unpickled as a plain stand-in (:class:`LegacyObject`), never as the real class
(nothing of fairseq is imported or called on a pickle's behalf).

Fairseq writes a checkpoint to ``<name>.tmp`` and renames it, but without syncing it to disk, and
it copies that file to the other names (``checkpoint_last.pt``, ``checkpoint_best.pt``) in place: a
crash or a full disk during a save can leave a truncated ``checkpoint_last.pt`` that the next start
cannot read. :func:`patch_fairseq` makes both the save and the copies atomic (temporary file in the
same folder, fsync, rename).
"""

from __future__ import annotations

import _compat_pickle
import argparse
import builtins
import functools
import io
import os
import pickle
import shutil
import sys
import types
from typing import Any

import torch

from hat.errors import UnsafeCheckpointError


class LegacyObject:
    """Stand-in for an object of a fairseq class that a checkpoint pickled (e.g. fairseq 0.8's
    ``fairseq.meters.AverageMeter``): it keeps the pickled attributes (or the arguments it was
    called with), runs nothing of the real class and pickles again as a plain dict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            self.__dict__["args"] = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (dict(self.__dict__),)

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} (fairseq 0.8) {self.__dict__}>"


_LEGACY_CLASSES: dict[tuple[str, str], type] = {}


def _legacy_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _LEGACY_CLASSES:
        _LEGACY_CLASSES[key] = type(name.rpartition(".")[2] or "LegacyObject", (LegacyObject,),
                                    {"__module__": module, "__qualname__": name})
    return _LEGACY_CLASSES[key]


# ----- restricted unpickling -------------------------------------------------------------------
class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowlist (turned into UnsafeCheckpointError
    by the functions that know the file's name)."""

    def __init__(self, target: str) -> None:
        super().__init__(f"refused global {target}")
        self.target = target


def _latin1_bytes(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it (latin-1 only)."""
    if not isinstance(text, str) or encoding.replace("_", "-").lower() not in (
            "latin1", "latin-1", "iso-8859-1"):
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin-1", errors)


def _type_of(*args: Any) -> type:
    """``type(obj)`` (how ``NoneType`` is pickled); never the 3-argument class factory."""
    if len(args) != 1:
        raise _Refused("builtins.type with 3 arguments (creates a class)")
    return type(args[0])


def _typing_subscript(origin: Any, params: Any) -> Any:
    """``operator.getitem`` as pickles of ``typing.List[int]`` etc. use it (typing only)."""
    if getattr(origin, "__module__", None) != "typing":
        raise _Refused(f"operator.getitem on {type(origin).__name__}")
    return origin[params]


def _torch_globals() -> dict[tuple[str, str], Any]:
    import torch._tensor
    import torch._utils
    import torch.serialization
    import torch.storage

    allowed: dict[tuple[str, str], Any] = {
        ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
        ("torch", "Tensor"): torch.Tensor, ("torch._tensor", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
        ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
        ("torch.storage", "TypedStorage"): torch.storage.TypedStorage,
        ("torch.storage", "UntypedStorage"): torch.storage.UntypedStorage,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                 "_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor",
                 "_rebuild_sparse_tensor", "_rebuild_nested_tensor",
                 "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
                 "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"):
        if hasattr(torch._utils, name):
            allowed[("torch._utils", name)] = getattr(torch._utils, name)
    kinds = (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)
    for name, value in vars(torch).items():
        if isinstance(value, kinds) or (isinstance(value, type) and name.endswith("Storage")):
            allowed[("torch", name)] = value
    for cls in getattr(torch, "_tensor_classes", ()):  # torch.FloatTensor, ...
        allowed[(cls.__module__, cls.__name__)] = cls
    return allowed


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        import numpy as np
    except ImportError:
        return {}
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype,
                                           ("numpy", "ndarray"): np.ndarray}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1 / numpy 2 names
        allowed[(module, "scalar")] = multiarray.scalar
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    return allowed


def _omegaconf_globals() -> dict[tuple[str, str], Any]:
    try:
        from omegaconf import base, dictconfig, listconfig, nodes
    except ImportError:
        return {}
    allowed: dict[tuple[str, str], Any] = {
        ("omegaconf.dictconfig", "DictConfig"): dictconfig.DictConfig,
        ("omegaconf.listconfig", "ListConfig"): listconfig.ListConfig,
    }
    for name in ("Metadata", "ContainerMetadata", "UnionNode"):
        if hasattr(base, name):
            allowed[("omegaconf.base", name)] = getattr(base, name)
    for name in ("AnyNode", "StringNode", "PathNode", "IntegerNode", "BytesNode", "FloatNode",
                 "BooleanNode", "EnumNode", "InterpolationResultNode"):
        if hasattr(nodes, name):
            allowed[("omegaconf.nodes", name)] = getattr(nodes, name)
    return allowed


@functools.lru_cache(maxsize=1)
def allowed_globals() -> dict[tuple[str, str], Any]:
    """What a checkpoint's pickle may name, ``(module, name) -> object``: containers and scalars,
    torch's tensor/storage rebuilding, numpy arrays and scalars, argparse's Namespace and
    omegaconf's configs (fairseq's args and cfg). Everything else is refused, except fairseq's
    own names, which become inert :class:`LegacyObject` stand-ins."""
    import argparse
    import collections
    import pathlib
    import typing

    allowed: dict[tuple[str, str], Any] = {
        ("builtins", name): getattr(builtins, name) for name in (
            "dict", "list", "tuple", "set", "frozenset", "slice", "complex", "bytearray", "int",
            "float", "bool", "str", "range", "Ellipsis")}
    allowed.update({
        ("builtins", "type"): _type_of,
        ("_codecs", "encode"): _latin1_bytes,
        ("_operator", "getitem"): _typing_subscript, ("operator", "getitem"): _typing_subscript,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("collections", "Counter"): collections.Counter,
        ("collections", "deque"): collections.deque,
        ("argparse", "Namespace"): argparse.Namespace,
        ("pathlib", "PosixPath"): pathlib.PosixPath,
        ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
        ("pathlib", "PureWindowsPath"): pathlib.PureWindowsPath,
    })
    for name in ("Any", "List", "Dict", "Tuple", "Set", "Optional", "Union"):
        allowed[("typing", name)] = getattr(typing, name)
    allowed.update(_torch_globals())
    allowed.update(_numpy_globals())
    allowed.update(_omegaconf_globals())
    # what fairseq's distributed training pickles when rank 0 broadcasts a loaded checkpoint
    _import_fairseq_quietly()
    from fairseq.distributed.utils import _TensorPlaceholder

    allowed[("fairseq.distributed.utils", "_TensorPlaceholder")] = _TensorPlaceholder
    return allowed


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names (``__builtin__.long``) as protocol-2 pickles write them, in Python 3's."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :func:`allowed_globals` (it imports nothing a pickle names,
    so no pickled call can run code); fairseq names become :class:`LegacyObject` stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name)
        obj = allowed_globals().get((module, name), _MISSING)
        if obj is not _MISSING:
            return obj
        if module == "fairseq" or module.startswith("fairseq."):
            return _legacy_class(module, name)
        raise _Refused(f"{module}.{name}")


_MISSING = object()


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs: Any) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# the ``pickle_module`` torch.load gets: only unpickling, restricted
restricted_pickle = types.ModuleType("hat_restricted_pickle", "pickle restricted to checkpoints")
restricted_pickle.__dict__.update(
    Unpickler=RestrictedUnpickler, load=_restricted_load, loads=_restricted_loads,
    UnpicklingError=pickle.UnpicklingError, PickleError=pickle.PickleError,
    HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL, DEFAULT_PROTOCOL=pickle.DEFAULT_PROTOCOL)


def _source_name(f: Any) -> str:
    if isinstance(f, str | os.PathLike):
        return os.fspath(f)
    name = getattr(f, "name", None)
    return str(name) if isinstance(name, str) else "a checkpoint in memory"


def _restricted_torch_load(f: Any, *args: Any, **kwargs: Any) -> Any:
    kwargs["pickle_module"] = restricted_pickle
    try:
        return clean_legacy_args(torch.load(f, *args, **kwargs))
    except _Refused as e:
        raise UnsafeCheckpointError(_source_name(f), e.target) from None


# fairseq-0.8 argument values that fairseq 0.12's config rejects: key -> {old value: new value}
LEGACY_ARG_VALUES: dict[str, dict[Any, Any]] = {
    "print_alignment": {False: None, True: "hard"},  # 0.8 a flag, 0.12 a choice (hard / soft)
}


def clean_legacy_args(state: Any) -> Any:
    """A loaded checkpoint with the values of its fairseq-0.8 ``args`` (HAT's own train.py
    saved them) that fairseq 0.12 cannot read replaced by their 0.12 meaning, so that every
    path (fairseq's loads, ``train.py --restore-file``, export, BLEU) reads it alike."""
    args = state.get("args") if isinstance(state, dict) else None
    if isinstance(args, argparse.Namespace):
        for key, values in LEGACY_ARG_VALUES.items():
            value = getattr(args, key, None)
            if isinstance(value, bool) and value in values:
                setattr(args, key, values[value])
    return state


class _TorchRestrictedLoad(types.ModuleType):
    """Proxy of the torch module whose ``load`` unpickles full checkpoints (HAT's included)
    with :class:`RestrictedUnpickler`."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    @functools.wraps(torch.load)
    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        if kwargs["weights_only"]:
            return torch.load(f, *args, **kwargs)
        return _restricted_torch_load(f, *args, **kwargs)


def load_checkpoint_file(path: Any, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a fairseq/HAT checkpoint (a pickle) with :class:`RestrictedUnpickler`:
    :class:`~hat.errors.UnsafeCheckpointError` where it asks for anything else."""
    return _restricted_torch_load(path, map_location=map_location, weights_only=False)


def _is_local(path: Any) -> bool:
    return isinstance(path, str | os.PathLike) and "://" not in str(path)


def _atomic_persistent_save(original: Any) -> Any:
    """fairseq's ``torch_persistent_save`` writing local files atomically (fsync + rename)."""

    @functools.wraps(original)
    def save(obj: Any, filename: Any, async_write: bool = False) -> Any:
        if async_write or not _is_local(filename):
            return original(obj, filename, async_write=async_write)
        from hat.atomic import atomic_torch_save

        atomic_torch_save(obj, filename)

    save._hat_atomic = True  # type: ignore[attr-defined]
    return save


class _AtomicCopyPathManager:
    """fairseq's PathManager whose ``copy`` of local files is atomic (checkpoint_last.pt etc.)."""

    _hat_atomic = True

    def __init__(self, base: Any) -> None:
        self._base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def copy(self, src_path: str, dst_path: str, overwrite: bool = False, **kwargs: Any) -> bool:
        """Copy to a temporary file beside ``dst_path``, sync it, rename it over ``dst_path``."""
        if kwargs or not (_is_local(src_path) and _is_local(dst_path)):
            return self._base.copy(src_path, dst_path, overwrite, **kwargs)
        if not overwrite and os.path.exists(dst_path):
            return False
        from hat.atomic import atomic_path

        with atomic_path(dst_path) as tmp, open(src_path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        return True


def _xla_available() -> bool:
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_bf16(args: Any) -> Any:
    """Stock fairseq turns ``--bf16`` into ``--tpu``; without torch_xla, mean bf16 on the GPU.

    The model then runs in bfloat16 with fp32 master weights (fairseq's FP16Optimizer without
    loss scaling).
    """
    if getattr(args, "bf16", False) and getattr(args, "tpu", False) and not _xla_available():
        args.tpu = False
    return args


# Warnings a user cannot act on (fairseq's own use of Hydra, torch APIs fairseq still calls).
_NOISE = (
    r"(?s).*is validated against ConfigStore schema with the same name",
    r"(?s).*is no longer experimental",
    r"(?s).*version_base parameter is not specified",
    r"(?s).*deprecated keyword in package header",
    r"(?s).*strict flag in the compose API is deprecated",
    r"(?s).*torch\.cuda\.amp\.autocast.*is deprecated",
    r"(?s).*'pin_memory' argument is set as true but no accelerator is found",
)


def _import_fairseq_quietly() -> None:
    """Import fairseq without its import-time logging side effects: its speech modules call
    ``logging.basicConfig`` (one at DEBUG level, which turns on every library's debug lines)
    and log a tensorboardX notice. The root logger is left as it was, so a CLI's own
    ``basicConfig`` (fairseq_cli.train's included) still takes effect."""
    import logging
    import warnings

    if "fairseq" in sys.modules:
        return
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    speech = logging.getLogger("fairseq.tasks.text_to_speech")
    speech.setLevel(logging.WARNING)  # "Please install tensorboardX"
    import fairseq  # noqa: F401

    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    speech.setLevel(logging.NOTSET)
    for name in ("fairseq_cli.train", "fairseq_cli.preprocess"):
        logging.getLogger(name).addFilter(_drop_config_dump)


def _drop_config_dump(record: Any) -> bool:
    """fairseq_cli.train and .preprocess log their whole config (up to 10 kB on one line) first:
    a line nobody acts on; checkpoints and preprocess.log keep it."""
    return isinstance(record.msg, str)


def patch_fairseq() -> None:
    """Adapt fairseq to recent torch and to bf16 on GPUs (idempotent).

    - checkpoint_utils (and distributed.utils) load full checkpoints, HAT's fairseq-0.8 ones
      included, with :class:`RestrictedUnpickler` (:data:`restricted_pickle`);
    - checkpoint_utils saves checkpoints and copies them to checkpoint_last/best.pt atomically;
    - ``convert_namespace_to_omegaconf`` (every fairseq entry point goes through it after
      parsing) applies :func:`gpu_bf16`;
    - (:func:`stop_when_converged`, called by the task when its option is on:
      ``fairseq_cli.train.should_stop_early`` also stops a converged training.)
    """
    _import_fairseq_quietly()
    import fairseq.checkpoint_utils as cu
    import fairseq.dataclass.utils as du
    import fairseq.distributed.utils as dist_utils

    for module in (cu, dist_utils):
        if not isinstance(module.torch, _TorchRestrictedLoad):
            module.torch = _TorchRestrictedLoad()
    if not getattr(cu.torch_persistent_save, "_hat_atomic", False):
        cu.torch_persistent_save = _atomic_persistent_save(cu.torch_persistent_save)
    if not getattr(cu.PathManager, "_hat_atomic", False):
        cu.PathManager = _AtomicCopyPathManager(cu.PathManager)
    convert = du.convert_namespace_to_omegaconf
    if not getattr(convert, "_hat_bf16", False):
        def convert_with_gpu_bf16(args: Any) -> Any:
            return convert(gpu_bf16(args))

        convert_with_gpu_bf16._hat_bf16 = True  # type: ignore[attr-defined]
        du.convert_namespace_to_omegaconf = convert_with_gpu_bf16
        for name, module in list(sys.modules.items()):
            if name.startswith(("fairseq", "fairseq_cli")) and getattr(
                    module, "convert_namespace_to_omegaconf", None) is convert:
                module.convert_namespace_to_omegaconf = convert_with_gpu_bf16


def optimizer_param_layout(wrapper: Any) -> tuple[Any, list[tuple[Any, list[tuple[Any, Any]]]]]:
    """Where fairseq's optimizer keeps each model parameter.

    Returns the torch optimizer that steps and, for each tensor it steps, the model parameters
    inside: ``[(model_param, None)]`` when it is that parameter (fp32, or memory-efficient fp16)
    or its own fp32 copy (the fp16/bf16 wrapper without flattening); ``[(model_param, offset),
    ...]`` for the wrapper's flat fp32 buffer, in the wrapper's order.
    """
    inner = inner_optimizer(wrapper)
    if hasattr(wrapper, "fp16_params"):  # FP16Optimizer (fp16 and bf16, fp32 master copy)
        fp16, fp32 = wrapper.fp16_params, wrapper.fp32_params
        if isinstance(fp32, dict):  # flattened: one buffer per device, params in order
            if len(fp32) != 1:  # fairseq's pipeline model parallelism, which HAT's models lack
                from hat.errors import HatConfigError

                raise HatConfigError("--optimizer hat_adam: fp16 buffers on several devices "
                                     "(pipeline model parallelism) are not supported; use "
                                     "--optimizer adam or one device per process")
            (flat,) = fp32.values()
            offsets, offset = [], 0
            for p in fp16:
                offsets.append((p, offset))
                offset += p.numel()
            return inner, [(flat, offsets)]
        return inner, [(p32, [(p, None)]) for p, p32 in zip(fp16, fp32)]
    # fp32, AMP (fp32 weights) or MemoryEfficientFP16Optimizer: it steps the model's own tensors
    return inner, [(p, [(p, None)]) for g in inner.param_groups for p in g["params"]]


def inner_optimizer(wrapper: Any) -> Any:
    """The torch optimizer inside fairseq's optimizer (and inside its fp16/bf16 wrappers)."""
    if hasattr(wrapper, "fp32_optimizer"):
        return wrapper.fp32_optimizer.optimizer
    return getattr(wrapper, "wrapped_optimizer", wrapper).optimizer


def stop_when_converged() -> None:
    """Extend fairseq's early-stopping check with :mod:`hat.convergence` (idempotent; only
    where fairseq's training loop is running, so ``import hat`` stays free of it)."""
    ft = sys.modules.get("fairseq_cli.train")
    if ft is None:
        return

    original = ft.should_stop_early
    if getattr(original, "_hat_converged", False):
        return

    def should_stop_early(cfg: Any, valid_loss: Any) -> bool:
        from hat import convergence

        stop = original(cfg, valid_loss)
        tracker = convergence.ACTIVE
        if valid_loss is not None and tracker is not None:
            warmup = int(getattr(cfg.lr_scheduler, "warmup_updates", 0) or 0)
            if tracker.observe(cfg.checkpoint.save_dir, float(valid_loss), warmup) and not stop:
                import logging

                logging.getLogger("hat.train").info(
                    "converged: valid %s gained %.3f bits over the last %d%% of updates "
                    "(< %g); stopping", cfg.checkpoint.best_checkpoint_metric,
                    convergence.gain_over_window(tracker.history, tracker.window),
                    round(tracker.window * 100), tracker.bits)
                stop = True
        return stop

    should_stop_early._hat_converged = True  # type: ignore[attr-defined]
    ft.should_stop_early = should_stop_early
