"""The one place where fairseq is adapted to recent torch.

With torch >= 2.6, ``torch.load`` defaults to ``weights_only=True``, which refuses the argparse
Namespace / omegaconf objects inside every fairseq checkpoint. Fairseq loads checkpoints in
``checkpoint_utils`` and, in distributed training, unpickles the checkpoint that rank 0 broadcasts
in ``distributed.utils``; exactly these two modules get a ``torch`` whose ``load`` passes
``weights_only=False``. Only load checkpoints you trust (pickle can run code).

Checkpoints written by HAT's fairseq 0.8 pickle objects of modules that fairseq 0.12 no longer has
(``extra_state['train_meters']`` holds ``fairseq.meters.AverageMeter``s): every checkpoint load
here unpickles such objects as plain stand-ins (:class:`LegacyObject`) instead of failing.

Fairseq writes a checkpoint to ``<name>.tmp`` and renames it, but without syncing it to disk, and
it copies that file to the other names (``checkpoint_last.pt``, ``checkpoint_best.pt``) in place: a
crash or a full disk during a save can leave a truncated ``checkpoint_last.pt`` that the next start
cannot read. :func:`patch_fairseq` makes both the save and the copies atomic (temporary file in the
same folder, fsync, rename).
"""

from __future__ import annotations

import functools
import os
import pickle
import shutil
import sys
import types
from typing import Any

import torch


class LegacyObject:
    """Stand-in for an object of a fairseq-0.8 class that fairseq 0.12 lacks (e.g.
    ``fairseq.meters.AverageMeter``): it keeps the pickled attributes and pickles again as a
    plain dict."""

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
        _LEGACY_CLASSES[key] = type(name, (LegacyObject,), {"__module__": module})
    return _LEGACY_CLASSES[key]


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickler that maps fairseq classes missing from this fairseq to :class:`LegacyObject`s."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            if module == "fairseq" or module.startswith("fairseq."):
                return _legacy_class(module, name)
            raise


def _legacy_load(file: Any, **kwargs: Any) -> Any:
    return _LegacyUnpickler(file, **kwargs).load()


legacy_pickle = types.ModuleType("hat_legacy_pickle", "pickle with fairseq-0.8 stand-ins")
legacy_pickle.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")})
legacy_pickle.Unpickler = _LegacyUnpickler  # type: ignore[attr-defined]
legacy_pickle.load = _legacy_load  # type: ignore[attr-defined]


class _TorchTrustedLoad(types.ModuleType):
    """Proxy of the torch module whose ``load`` unpickles full checkpoints (HAT's included)."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    @functools.wraps(torch.load)
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        if not kwargs["weights_only"]:
            kwargs.setdefault("pickle_module", legacy_pickle)
        return torch.load(*args, **kwargs)


def trusted_load(path: Any, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a full (pickled) fairseq/HAT checkpoint."""
    return torch.load(path, map_location=map_location, weights_only=False,
                      pickle_module=legacy_pickle)


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

    - checkpoint_utils loads full checkpoints (``weights_only=False``), HAT's fairseq-0.8 ones
      included (:data:`legacy_pickle`);
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
        if not isinstance(module.torch, _TorchTrustedLoad):
            module.torch = _TorchTrustedLoad()
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
    if hasattr(wrapper, "fp32_optimizer"):  # FP16Optimizer (fp16 and bf16, fp32 master copy)
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
    # fp32, or MemoryEfficientFP16Optimizer: it steps the model's own tensors
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
