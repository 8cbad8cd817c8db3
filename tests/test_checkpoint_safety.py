"""No code runs from a checkpoint we load: the restricted unpickler refuses what a checkpoint does
not need (download_model.py, read_checkpoint, fairseq's own loads, train.py, hat.bleu, export),
and still loads this project's fairseq-0.12 checkpoints and HAT's fairseq-0.8 ones."""

from __future__ import annotations

import argparse
import builtins
import codecs
import collections
import importlib
import io
import operator
import os
import pathlib
import pickle
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from hat.checkpoint import build_from_checkpoint, read_checkpoint
from hat.compat import LegacyObject, load_checkpoint_file, patch_fairseq, restricted_pickle
from hat.download.cli import models_main
from hat.errors import HatConfigError, UnsafeCheckpointError
from tests.conftest import ROOT

NAME = "HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8"
SYSTEM = f"{os.system.__module__}.system"  # posix.system
TINY = ROOT / "configs" / "toy" / "supertransformer" / "tiny.yml"


class Call:
    """Pickles as the call ``func(*args)`` (what a malicious checkpoint does)."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def evil_checkpoint(path: Path, canary: Path, legacy: bool = False) -> Path:
    """A fairseq-looking checkpoint whose pickle runs ``touch <canary>``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"args": argparse.Namespace(arch="transformersuper_wmt_en_de"),
             "model": {"encoder.embed_tokens.weight": torch.zeros(4, 4)},
             "extra_state": {"x": Call(os.system, f"touch {canary}")}}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# ----------------------------------------------------------------------------- refused
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pre-1.6"])
def test_read_checkpoint_refuses_a_pickle_that_runs_code(tmp_path: Path, legacy: bool) -> None:
    canary = tmp_path / "canary"
    path = evil_checkpoint(tmp_path / "evil.pt", canary, legacy)
    with pytest.raises(UnsafeCheckpointError) as e:
        read_checkpoint(path)
    assert not canary.exists()
    assert e.value.target == SYSTEM and isinstance(e.value, HatConfigError)
    assert str(e.value).startswith(f"refused to load {path}: it asks to run {SYSTEM}, which a "
                                   "checkpoint does not need (nothing of it was run); only load "
                                   "files you trust")
    with pytest.raises(UnsafeCheckpointError, match=f"refused to load {path}"):
        load_checkpoint_file(path)
    assert not canary.exists()


def test_download_model_refuses_it_and_keeps_nothing(tmp_path: Path, capsys) -> None:
    canary, mirror, save = tmp_path / "canary", tmp_path / "mirror", tmp_path / "models"
    src = evil_checkpoint(mirror / f"{NAME}.pt", canary)
    argv = ["--model-name", NAME, "--save-path", str(save), "--mirror", str(mirror)]
    assert models_main(argv) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {NAME} (from {src}): refused to load it: it asks to run {SYSTEM}, "
                   "which a checkpoint does not need (nothing of it was run); only load files you "
                   "trust, e.g. HAT's released models from their published links\n")
    assert not canary.exists() and sorted(save.iterdir()) == []
    res = subprocess.run([sys.executable, str(ROOT / "download_model.py"), *argv], cwd=tmp_path,
                         capture_output=True, text=True, env=env())
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"refused to load it: it asks to run {SYSTEM}" in res.stderr
    assert not canary.exists() and sorted(save.iterdir()) == []


def test_fairseqs_own_loads_refuse_it(tmp_path: Path) -> None:
    from fairseq import checkpoint_utils
    from fairseq.distributed import utils as dist_utils

    patch_fairseq()
    canary = tmp_path / "canary"
    path = evil_checkpoint(tmp_path / "evil.pt", canary)
    with pytest.raises(UnsafeCheckpointError, match=f"refused to load {path}: it asks to run "
                                                    f"{SYSTEM}"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    buffer = io.BytesIO(path.read_bytes())  # as rank 0 broadcasts a checkpoint
    with pytest.raises(UnsafeCheckpointError, match="refused to load a checkpoint in memory"):
        dist_utils.torch.load(buffer, map_location="cpu")
    assert not canary.exists()


def _payloads(tmp_path: Path) -> list[tuple[object, str]]:
    return [
        (Call(builtins.eval, "1"), "builtins.eval"),
        (Call(builtins.exec, "x = 1"), "builtins.exec"),
        (Call(getattr, Path, "home"), "builtins.getattr"),
        (Call(importlib.import_module, "os"), "importlib.import_module"),
        (Call(subprocess.Popen, ["true"]), "subprocess.Popen"),
        (Call(np.load, str(tmp_path / "x.npy")), "numpy.load"),
        (Call(torch.load, str(tmp_path / "x.pt")), "torch.serialization.load"),
        (Call(type, "X", (dict,), {}), "builtins.type with 3 arguments (creates a class)"),
        (Call(codecs.encode, "x", "rot13"), "_codecs.encode with 'rot13'"),
        (Call(operator.getitem, {"a": 1}, "a"), "operator.getitem on dict"),
    ]


def test_every_call_outside_the_allowlist_is_refused(tmp_path: Path) -> None:
    for payload, target in _payloads(tmp_path):
        for legacy in (False, True):
            path = tmp_path / "p.pt"
            torch.save({"model": {}, "x": payload}, path, _use_new_zipfile_serialization=not legacy)
            with pytest.raises(UnsafeCheckpointError) as e:
                load_checkpoint_file(path)
            assert e.value.target == target, (target, str(e.value))
    # a method of an allowed class: getattr (protocol 2), or a dotted name (protocol 4)
    torch.save({"model": {}, "x": Call(collections.OrderedDict.fromkeys, [1])}, tmp_path / "m.pt")
    with pytest.raises(UnsafeCheckpointError, match="it asks to run builtins.getattr"):
        load_checkpoint_file(tmp_path / "m.pt")
    dotted = b"\x80\x04\x8c\x0bcollections\x8c\x14OrderedDict.fromkeys\x93."  # the function
    assert pickle.loads(dotted) == collections.OrderedDict.fromkeys
    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict.fromkeys"):
        restricted_pickle.loads(dotted)


def test_fairseq_names_become_inert_stand_ins(tmp_path: Path) -> None:
    """A pickled call of a fairseq function (here one that imports a folder: runs its code) and a
    fairseq class load as LegacyObjects: nothing of fairseq is called."""
    from fairseq import utils
    from fairseq.data import Dictionary

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    canary = tmp_path / "canary"
    (plugin / "__init__.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    call = Call(utils.import_user_module, argparse.Namespace(user_dir=str(plugin)))
    d = Dictionary()
    d.add_symbol("hello")
    torch.save({"model": {}, "call": call, "dict": d}, tmp_path / "f.pt")
    state = load_checkpoint_file(tmp_path / "f.pt")
    assert not canary.exists()
    assert isinstance(state["call"], LegacyObject)
    assert type(state["call"]).__module__ == "fairseq.utils"
    assert state["call"].args[0].user_dir == str(plugin)
    assert isinstance(state["dict"], LegacyObject) and not isinstance(state["dict"], Dictionary)
    assert state["dict"].symbols[-1] == "hello"


# ----------------------------------------------------------------------------- still loaded
def everything_a_checkpoint_holds() -> dict:
    """Objects fairseq, HAT and this project pickle into checkpoints (and a few more)."""
    sparse = torch.tensor([[0.0, 1.5], [2.0, 0.0]]).to_sparse()
    return {
        "model": collections.OrderedDict(w=torch.randn(3, 2).half(), b=torch.ones(2).bfloat16(),
                                         p=torch.nn.Parameter(torch.ones(2)), s=sparse),
        "args": argparse.Namespace(arch="transformersuper", lr=[1e-3], betas="(0.9, 0.98)",
                                   update_freq=[16], path=pathlib.PurePosixPath("/a/b")),
        "misc": [{1, 2}, frozenset([3]), slice(1, 5, 2), complex(1, 2), bytearray(b"ab"),
                 b"\x00\xff", range(3), Ellipsis, type(None), None, True, 1.5, 10 ** 20,
                 "text", (1, (2, 3))],
        "torch": [torch.Size([2, 3]), torch.device("cpu"), torch.float16, torch.strided],
        "collections": [collections.defaultdict(list, a=[1]), collections.Counter("aab"),
                        collections.deque([1, 2])],
        "numpy": [np.float64(1.25), np.int64(7), np.arange(6).reshape(2, 3), np.zeros(2, "f4"),
                  np.random.RandomState(0).get_state()],
        "typing": [typing.Any, typing.Optional[int], typing.List[int],  # noqa: UP006, UP045
                   typing.Dict[str, int]],  # noqa: UP006 - what omegaconf's metadata holds
        "cfg": OmegaConf.create({"model": {"arch": "transformersuper", "dims": [1, 2]},
                                 "optimization": {"lr": [0.001]}, "missing": "???",
                                 "ref": "${model.arch}"}),
        "optimizer_history": [{"num_updates": 3, "lr_scheduler_state": {"best": 4.0}}],
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.layout == b.layout
                and torch.equal(a.to_dense(), b.to_dense()))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict) and not OmegaConf.is_config(a):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, argparse.Namespace):
        return _same(vars(a), vars(b))
    if OmegaConf.is_config(a):
        return (type(a) is type(b) and OmegaConf.to_container(a) == OmegaConf.to_container(b)
                and OmegaConf.is_missing(b, "missing") and b.ref == "transformersuper")
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pre-1.6"])
def test_everything_a_checkpoint_holds_loads(tmp_path: Path, legacy: bool) -> None:
    state = everything_a_checkpoint_holds()
    torch.save(state, tmp_path / "c.pt", _use_new_zipfile_serialization=not legacy)
    loaded = load_checkpoint_file(tmp_path / "c.pt")
    assert loaded.keys() == state.keys()
    for key in state:
        assert _same(state[key], loaded[key]), key


@pytest.mark.slow
def test_a_cfg_pickled_as_omegaconf_loads_in_fairseq(tmp_path: Path, trained: Path) -> None:
    """Older fairseq saved ``cfg`` as a DictConfig (its nodes, metadata and typing.Any)."""
    from fairseq import checkpoint_utils

    patch_fairseq()
    state = load_checkpoint_file(trained)
    state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
    torch.save(state, tmp_path / "omega.pt")
    again = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "omega.pt"))
    assert again["cfg"].model.arch == "transformersuper"
    assert build_from_checkpoint(read_checkpoint(tmp_path / "omega.pt")) is not None


# ----------------------------------------------------------------------------- real checkpoints
@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    from hat.data.toy_corpus import make_toy_corpus

    return make_toy_corpus(tmp_path_factory.mktemp("toy"), n_train=200, n_valid=20, n_test=20)


def train(data: Path, save: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", str(data), f"--configs={TINY}", "--save-dir", str(save),
         "--max-tokens", "1024", "--num-workers", "0", "--disable-validation", *extra],
        cwd=ROOT, capture_output=True, text=True, env=env())


@pytest.fixture(scope="module")
def trained(toy: Path, tmp_path_factory) -> Path:
    """checkpoint_last.pt of this project's training (2 updates, then resumed to 3: fairseq's
    own load of it)."""
    save = tmp_path_factory.mktemp("ck")
    for updates in (2, 3):
        res = train(toy, save, "--max-update", str(updates))
        assert res.returncode == 0, res.stderr[-3000:]
    return save / "checkpoint_last.pt"


@pytest.mark.slow
def test_this_projects_checkpoint_loads_everywhere(toy: Path, trained: Path) -> None:
    from fairseq import checkpoint_utils

    from hat.evaluate import load_for_eval

    patch_fairseq()
    state = read_checkpoint(trained)
    assert state["optimizer_history"][-1]["num_updates"] == 3  # resumed through fairseq's load
    assert build_from_checkpoint(state, trained) is not None
    assert checkpoint_utils.load_checkpoint_to_cpu(str(trained))["cfg"].model.arch == (
        "transformersuper")
    _, model = load_for_eval(str(trained), str(toy))
    assert model.encoder is not None


def test_hats_fairseq08_checkpoint_loads_everywhere(toy: Path, tmp_path: Path) -> None:
    from fairseq import checkpoint_utils

    from tests.test_checkpoint_export import write_hat_checkpoint

    patch_fairseq()
    original = write_hat_checkpoint(tmp_path / "HAT.pt", toy)
    state = read_checkpoint(tmp_path / "HAT.pt")
    assert isinstance(state["extra_state"]["train_meters"]["wps"], LegacyObject)
    model = build_from_checkpoint(state, tmp_path / "HAT.pt")
    for name, p in model.state_dict().items():
        assert torch.equal(p, original.state_dict()[name].half().float()), name
    fairseq_state = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "HAT.pt"))
    assert fairseq_state["args"].arch == "transformersuper_wmt_en_de"


@pytest.mark.slow
def test_train_and_bleu_and_export_refuse_it_with_one_line(toy: Path, tmp_path: Path,
                                                           capsys) -> None:
    from hat.bleu import main as bleu_main
    from hat.export import export
    from hat.space import SearchSpace
    from tests.conftest import TINY_SPACE

    canary = tmp_path / "canary"
    evil = evil_checkpoint(tmp_path / "evil.pt", canary)
    resumed = evil_checkpoint(tmp_path / "ck" / "checkpoint_last.pt", canary)  # fairseq loads it
    for extra in (["--restore-file", str(evil)], []):
        res = train(toy, tmp_path / "ck", "--max-update", "1", *extra)
        assert res.returncode == 2, res.stderr[-3000:]
        assert "Traceback" not in res.stderr
        assert f"refused to load {evil if extra else resumed}: it asks to run {SYSTEM}" in (
            res.stderr)
    assert bleu_main(["--data", str(toy), "--checkpoint", str(evil), "--cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"refused to load {evil}: it asks to run {SYSTEM}" in err
    with pytest.raises(UnsafeCheckpointError, match=f"it asks to run {SYSTEM}"):
        export(str(evil), SearchSpace(**TINY_SPACE).smallest(), str(tmp_path / "out.pt"))
    assert not canary.exists()
