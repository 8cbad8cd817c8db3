"""Restricted unpickling of checkpoints.

Every checkpoint is a pickle, and unpickling can run any code the file names. Nothing here
unpickles with Python's permissive loader: :func:`load_checkpoint_file` and the ``torch`` that
fairseq's ``checkpoint_utils`` and ``distributed.utils`` get (fairseq loads checkpoints in the
first and, in distributed training, unpickles the checkpoint that rank 0 broadcasts in the
second; :func:`restrict_torch_load` installs it) unpickle with :class:`RestrictedUnpickler`,
whose ``find_class`` resolves only what a fairseq or HAT checkpoint holds
(:func:`allowed_globals`: containers, tensors and storages, numpy arrays, argparse's Namespace,
omegaconf's configs). A file that asks for anything else (``os.system``, ``builtins.eval``, a
class of some installed package) is refused before any of it runs, with
:class:`~hat.errors.UnsafeCheckpointError` naming the file and what it asked for. (torch >= 2.6's
``weights_only=True`` refuses the Namespace and omegaconf objects inside every fairseq
checkpoint, and cannot stand in for fairseq 0.8's classes: :mod:`hat.compat.legacy`.)
"""

from __future__ import annotations

import _compat_pickle
import builtins
import functools
import io
import os
import pickle
import types
from typing import Any

import torch

from hat.compat.legacy import clean_legacy_args, legacy_class
from hat.compat.quiet import import_fairseq_quietly
from hat.errors import UnsafeCheckpointError


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
    import_fairseq_quietly()
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
            return legacy_class(module, name)
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


def restrict_torch_load(module: Any) -> None:
    """Give a fairseq module (``checkpoint_utils``, ``distributed.utils``) a ``torch`` whose
    full ``load`` is restricted (idempotent)."""
    if not isinstance(module.torch, _TorchRestrictedLoad):
        module.torch = _TorchRestrictedLoad()
