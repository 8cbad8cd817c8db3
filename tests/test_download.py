"""download_model.py and get_preprocessed.sh: HAT's table, mirror, HTTP, checks, safe extraction."""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import re
import subprocess
import sys
import tarfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch
import yaml

import hat.download as dl
from hat.checkpoint import save_checkpoint
from hat.data.text import fairseq_preprocess
from hat.download import (
    HAT_DATA,
    HAT_MODELS,
    MARKER,
    DownloadError,
    catalog,
    databin_missing,
    direct_url,
    download_model,
    fetch_data,
    transfer,
)
from hat.download.cli import data_main, models_main
from hat.errors import HatConfigError
from hat.space import read_subtransformer_yaml, subtransformer_yaml_dict
from tests.conftest import ROOT, serve_http

NAME = "HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8"
SUPERS = ("HAT_wmt14ende_super_space0", "HAT_wmt14enfr_super_space0",
          "HAT_wmt19ende_super_space0", "HAT_iwslt14deen_super_space1")


# ----------------------------------------------------------------------------- fixtures
def released_args(name: str = NAME, **changes) -> argparse.Namespace:
    """Args as a released HAT checkpoint of ``name`` holds them: a SuperTransformer arch, the
    task's SuperTransformer dims and, for a SubTransformer, its ``*_subtransformer`` keys."""
    released = dl.released_architecture(name)
    args = argparse.Namespace(arch=released.arch, **{k: getattr(released.space, k)
                                                     for k in dl.SUPER_ARCH_KEYS})
    if released.sub is not None:
        args.train_subtransformer = True
        for key, value in subtransformer_yaml_dict(released.sub).items():
            setattr(args, key.replace("-", "_"), value)
    for key, value in changes.items():
        setattr(args, key, value)
    return args


def released_weights(space, seed: int = 0, **shapes) -> dict[str, torch.Tensor]:
    """A state dict with the SuperTransformer's shapes (``space``), small on disk: the layers'
    weights are one element expanded (``shapes``: key -> another shape)."""
    torch.manual_seed(seed)
    sd = {f"{side}.embed_tokens.weight": torch.randn(8, getattr(space, f"{side}_embed_dim"))
          .half() for side in ("encoder", "decoder")}
    for side in ("encoder", "decoder"):
        embed, ffn = getattr(space, f"{side}_embed_dim"), getattr(space, f"{side}_ffn_embed_dim")
        for i in range(getattr(space, f"{side}_layers")):
            sd[f"{side}.layers.{i}.fc1.weight"] = (ffn, embed)
            sd[f"{side}.layers.{i}.fc2.weight"] = (embed, ffn)
            sd[f"{side}.layers.{i}.self_attn.in_proj_weight"] = (3 * space.qkv_dim, embed)
    sd.update(shapes)
    return {k: torch.zeros(1).half().expand(*v) if isinstance(v, tuple) else v
            for k, v in sd.items()}


def write_model(path: Path, seed: int = 0, name: str = NAME, args=None, **shapes) -> bytes:
    """A checkpoint with the architecture of HAT's ``name`` (``args``/``shapes``: another);
    returns its bytes."""
    space = dl.released_architecture(name).space
    save_checkpoint(path, args or released_args(name), released_weights(space, seed, **shapes))
    return path.read_bytes()


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    folder = tmp_path / "mirror"
    folder.mkdir()
    write_model(folder / f"{NAME}.pt")
    return folder


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        route = self.server.routes.get(self.path.split("?")[0])  # type: ignore[attr-defined]
        status, ctype, body, declared = route or (404, "text/plain", b"not found", None)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(declared if declared is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)  # fewer bytes than declared: the connection drops

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    """A local HTTP server; ``server.routes[path] = (status, type, body, declared length)``."""
    yield from serve_http(_Handler, monkeypatch, routes={})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------- the table
def test_table_holds_hats_48_models_and_4_datasets() -> None:
    assert len(HAT_MODELS) == 48 and all(s in HAT_MODELS for s in SUPERS)
    subs = {n for n in HAT_MODELS if n not in SUPERS}
    shipped = {p.stem for p in ROOT.glob("configs/*/subtransformer/HAT_*.yml")}
    assert subs == shipped  # every released SubTransformer has its YAML for test.sh
    for name, url in HAT_MODELS.items():
        assert re.fullmatch(rf"https://www\.dropbox\.com/s/[0-9a-z]{{15}}/{re.escape(name)}"
                            r"\.pt\?dl=0", url), url
        assert direct_url(url) == url[:-1] + "1"
    assert dl.model_url(NAME).endswith("/pmfwwg1d1kmfdh5/" + NAME + ".pt?dl=1")
    for task, spec in HAT_DATA.items():
        assert spec.url.startswith("https://www.dropbox.com/s/") and spec.url.endswith("?dl=0")
        for yml in ROOT.glob(f"configs/{task}/supertransformer/*.yml"):
            keys = yaml.safe_load(yml.read_text())
            assert keys["data"] == f"data/{task}/data-bin"
            assert (keys["source-lang"], keys["target-lang"]) == (spec.src, spec.tgt)
        script = (ROOT / "configs" / task / "get_preprocessed.sh").read_text()
        assert f"-m hat.download data --task {task} " in script


def test_unknown_model_name_lists_close_matches(capsys) -> None:
    assert models_main(["--model-name", "HAT_wmt14ende_raspberrypi@3.5s_bleu@25.9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model-name HAT_wmt14ende_raspberrypi@3.5s_bleu@25.9: not one")
    assert f"closest: {NAME}" in err
    assert models_main(["--model-name", "HAT_iwslt14deen_titanxp"]) == 2
    assert "HAT_iwslt14deen_titanxp@45.6ms_bleu@33.4" in capsys.readouterr().err
    assert models_main(["--model-name", NAME, "--sha256", "abc"]) == 2
    assert "not a sha256 digest" in capsys.readouterr().err


def test_a_save_path_that_cannot_be_written_is_refused_before_fetching(tmp_path: Path,
                                                                        capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert models_main(["--model-name", NAME, "--save-path", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --save-path") and f"{blocker} is a file" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- models
def test_mirror_copy_skip_force_and_sha256(mirror: Path, tmp_path: Path, capsys) -> None:
    save = tmp_path / "models"
    src = mirror / f"{NAME}.pt"
    argv = ["--model-name", NAME, "--save-path", str(save), "--mirror", str(mirror)]
    assert models_main(argv) == 0
    assert (save / f"{NAME}.pt").read_bytes() == src.read_bytes()
    assert "| copied" in capsys.readouterr().out
    assert models_main(argv) == 0
    assert "| present" in capsys.readouterr().out
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert models_main([*argv, "--force", "--sha256", digest]) == 0
    assert "| copied" in capsys.readouterr().out
    old = src.read_bytes()
    write_model(src, seed=1)  # the mirror now holds another file than its .sha256 says
    Path(f"{src}.sha256").write_text(f"{digest}  {NAME}.pt\n")
    assert models_main([*argv, "--force"]) == 1
    assert "does not match the expected " + digest in capsys.readouterr().err
    assert (save / f"{NAME}.pt").read_bytes() == old and leftovers(save) == [f"{NAME}.pt"]
    (save / f"{NAME}.pt").write_text("<html>not a model</html>")  # present but not valid
    src.write_bytes(old)
    assert models_main(argv) == 0
    assert "| replacing" in capsys.readouterr().out
    assert (save / f"{NAME}.pt").read_bytes() == old
    assert models_main([*argv[:-1], str(tmp_path / "empty_mirror")]) == 2
    (tmp_path / "empty_mirror").mkdir()
    assert models_main([*argv[:-1], str(tmp_path / "empty_mirror"), "--force"]) == 1
    assert "not found in the mirror folder" in capsys.readouterr().err


def test_download_over_http_with_checks(server, tmp_path: Path) -> None:
    good = write_model(tmp_path / "good.pt")
    server.routes["/ok.pt"] = (200, "application/octet-stream", good, None)
    server.routes["/page"] = (200, "text/html", b"<!DOCTYPE html><html>log in</html>", None)
    server.routes["/html.pt"] = (200, "application/octet-stream", b"<!DOCTYPE html>...", None)
    server.routes["/cut.pt"] = (200, "application/octet-stream", good[:500], len(good))
    save = tmp_path / "models"
    path, how = download_model(NAME, save, url=f"{server.url}/ok.pt?dl=0", log=lambda m: None)
    assert how == "downloaded" and path.read_bytes() == good
    for route, message in (("/page", "answered with a web page"),
                           ("/html.pt", "an HTML/XML page, not a checkpoint"),
                           ("/cut.pt", f"stopped after 500 of {len(good):,} bytes"),
                           ("/missing.pt", "HTTP 404")):
        with pytest.raises(DownloadError, match=re.escape(message)):
            download_model("HAT_wmt14ende_super_space0", save, url=f"{server.url}{route}?dl=0",
                           log=lambda m: None)
    assert leftovers(save) == [f"{NAME}.pt"]  # no partial or temporary file


def test_interrupted_download_leaves_no_partial_file(server, tmp_path: Path,
                                                     monkeypatch) -> None:
    server.routes["/big.pt"] = (200, "application/octet-stream", b"x" * (3 << 20), None)

    class Interrupt:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(transfer, "progress_bar", lambda total, desc: Interrupt())
    save = tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        download_model(NAME, save, url=f"{server.url}/big.pt", log=lambda m: None)
    assert leftovers(save) == []


def test_unreachable_network_names_the_url_and_the_mirror_option(tmp_path: Path,
                                                                 capsys, monkeypatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setitem(HAT_MODELS, NAME, f"http://127.0.0.1:{port}/{NAME}.pt?dl=0")
    assert models_main(["--model-name", NAME, "--save-path", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert f"cannot download http://127.0.0.1:{port}/{NAME}.pt?dl=1" in err
    assert f"put it into a folder as {NAME}.pt and run again with --mirror <folder>" in err
    assert leftovers(tmp_path / "m") == []


def test_download_all_reports_failures_and_continues(server, tmp_path: Path, monkeypatch,
                                                     capsys) -> None:
    good = write_model(tmp_path / "good.pt")
    server.routes["/good.pt"] = (200, "application/octet-stream", good, None)
    table = {"HAT_a": f"{server.url}/good.pt?dl=0", "HAT_b": f"{server.url}/gone.pt?dl=0",
             "HAT_c": f"{server.url}/good.pt?dl=0"}
    monkeypatch.setattr(catalog, "HAT_MODELS", table)
    save = tmp_path / "all"
    assert models_main(["--download-all", "--save-path", str(save)]) == 1
    out, err = capsys.readouterr()
    assert leftovers(save) == ["HAT_a.pt", "HAT_c.pt"]
    assert "error: HAT_b: cannot download" in err and "HTTP 404" in err
    assert "| 2 of 3 models in" in out and "failed: HAT_b" in out
    assert models_main(["--download-all", "--sha256", "0" * 64]) == 2


@pytest.mark.slow
def test_download_model_commands(mirror: Path, tmp_path: Path) -> None:
    for script in ("download_model.py", "scripts/download_model.py"):
        save = tmp_path / script.replace("/", "_")
        res = subprocess.run([sys.executable, str(ROOT / script), f"--model-name={NAME}",
                              "--save-path", str(save), "--mirror", str(mirror)],
                             cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        assert (save / f"{NAME}.pt").read_bytes() == (mirror / f"{NAME}.pt").read_bytes()


# ----------------------------------------------------------------------------- architectures
def _copy_error(mirror: Path, tmp_path: Path, capsys, name: str = NAME) -> str:
    """models_main's error for the mirror's ``name``.pt (exit 1, nothing copied)."""
    save = tmp_path / "models"
    assert models_main(["--model-name", name, "--save-path", str(save), "--mirror",
                        str(mirror)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert leftovers(save) == []
    return err


def test_a_toy_checkpoint_under_a_released_name_is_refused(mirror: Path, tmp_path: Path,
                                                           capsys) -> None:
    from tests.conftest import TINY_SPACE

    src = mirror / f"{NAME}.pt"
    toy = argparse.Namespace(arch="transformersuper", **{k: TINY_SPACE[k]
                                                         for k in dl.SUPER_ARCH_KEYS})
    save_checkpoint(src, toy, {"encoder.embed_tokens.weight": torch.randn(8, 48).half()})
    err = _copy_error(mirror, tmp_path, capsys)
    assert err == (f"error: {NAME} (from {src}): not HAT's {NAME}: its args have "
                   "encoder-embed-dim = 48, HAT's has 640\n")


@pytest.mark.parametrize(("name", "args", "shapes", "message"), [
    (NAME, {"arch": "hat_subtransformer"}, {},
     "its args have arch = hat_subtransformer, HAT's has transformersuper_wmt_en_de (a "
     "SuperTransformer)"),
    (NAME, {"decoder_ffn_embed_dim": 2048}, {},
     "its args have decoder-ffn-embed-dim = 2048, HAT's has 3072"),
    (NAME, {"encoder_attention_heads": 4}, {},
     "its args have encoder-attention-heads = 4, HAT's has 8"),
    (NAME, {"qkv_dim": None}, {}, "its args hold no qkv-dim (HAT's has qkv-dim = 512)"),
    (NAME, {}, {"encoder.layers.3.fc1.weight": (2048, 640)},
     "its weights have encoder-ffn-embed-dim = 2048 (encoder.layers.3.fc1.weight [2048, 640]),"
     " HAT's has 3072"),
    (NAME, {}, {"decoder.layers.6.fc1.weight": (3072, 640)},
     "its weights have decoder-layers = 7 (decoder.layers.0-6), HAT's has 6"),
    (NAME, {}, {"decoder.embed_tokens.weight": torch.zeros(8, 512)},
     "its weights have decoder-embed-dim = 512 (decoder.embed_tokens.weight [8, 512]), "
     "HAT's has 640"),
    (NAME, {"decoder_layer_num_subtransformer": 2,
            "decoder_ffn_embed_dim_all_subtransformer": [3072, 3072],
            "decoder_self_attention_heads_all_subtransformer": [8, 8],
            "decoder_ende_attention_heads_all_subtransformer": [8, 8],
            "decoder_arbitrary_ende_attn_all_subtransformer": [-1, -1]}, {},
     "its args have decoder-layer-num-subtransformer = 2, HAT's has 1 "
     f"(configs/wmt14.en-de/subtransformer/{NAME}.yml)"),
    (NAME, {"encoder_ffn_embed_dim_all_subtransformer": [3072] * 6}, {},
     "its args have encoder-ffn-embed-dim-all-subtransformer = [3072, 3072, 3072, 3072, 3072, "
     "3072], HAT's has [1024, 3072, 3072, 2048, 2048, 2048] "
     f"(configs/wmt14.en-de/subtransformer/{NAME}.yml)"),
])
def test_architecture_mismatch_names_the_key_found_and_expected(
        mirror: Path, tmp_path: Path, capsys, name, args, shapes, message) -> None:
    src = mirror / f"{name}.pt"
    write_model(src, name=name, args=released_args(name, **args), **shapes)
    err = _copy_error(mirror, tmp_path, capsys, name)
    assert err == f"error: {name} (from {src}): not HAT's {name}: {message}\n"


def test_a_wmt_supertransformer_is_not_iwslts(mirror: Path, tmp_path: Path, capsys) -> None:
    name = "HAT_iwslt14deen_super_space1"
    write_model(mirror / f"{name}.pt", name="HAT_wmt14ende_super_space0")
    err = _copy_error(mirror, tmp_path, capsys, name)
    assert f"not HAT's {name}: its args have encoder-ffn-embed-dim = 3072, HAT's has 2048" in err
    write_model(mirror / f"{name}.pt", name=name)  # space1 dims, no SubTransformer keys
    assert models_main(["--model-name", name, "--save-path", str(tmp_path / "ok"), "--mirror",
                        str(mirror)]) == 0


def test_released_subtransformer_without_its_keys_and_present_files(mirror: Path,
                                                                    tmp_path: Path,
                                                                    capsys) -> None:
    src, save = mirror / f"{NAME}.pt", tmp_path / "models"
    write_model(src, args=released_args(NAME, **{k: None for k in (
        "encoder_embed_dim_subtransformer", "decoder_embed_dim_subtransformer",
        "encoder_ffn_embed_dim_all_subtransformer", "decoder_ffn_embed_dim_all_subtransformer",
        "encoder_layer_num_subtransformer", "decoder_layer_num_subtransformer",
        "encoder_self_attention_heads_all_subtransformer",
        "decoder_self_attention_heads_all_subtransformer",
        "decoder_ende_attention_heads_all_subtransformer",
        "decoder_arbitrary_ende_attn_all_subtransformer")}))
    argv = ["--model-name", NAME, "--save-path", str(save), "--mirror", str(mirror)]
    assert models_main(argv) == 0  # test.sh gives the SubTransformer with its YAML
    assert "| copied" in capsys.readouterr().out
    write_model(save / f"{NAME}.pt", args=released_args(NAME, decoder_embed_dim=512))
    assert models_main(argv) == 0  # a present file of another architecture is replaced
    out = capsys.readouterr().out
    assert (f"| replacing  {save / NAME}.pt: not HAT's {NAME}: its args have decoder-embed-dim "
            "= 512, HAT's has 640") in out
    assert (save / f"{NAME}.pt").read_bytes() == src.read_bytes()


def test_published_architectures_match_the_configs() -> None:
    for name in HAT_MODELS:
        released = dl.released_architecture(name)
        assert released is not None and released.is_super == (name in SUPERS), name
        folder = ROOT / "configs" / released.task
        ymls = [folder / "subtransformer" / "common.yml"] if not released.is_super else list(
            (folder / "supertransformer").glob(f"{name.rsplit('_', 1)[1]}.yml"))
        assert len(ymls) == 1, name
        keys = yaml.safe_load(ymls[0].read_text())
        assert keys["arch"] == released.arch
        for key in dl.SUPER_ARCH_KEYS:
            assert keys[key.replace("_", "-")] == getattr(released.space, key), (name, key)
        if not released.is_super:
            assert released.sub == read_subtransformer_yaml(folder / "subtransformer"
                                                            / f"{name}.yml")
    assert dl.released_architecture("HAT_a") is None


def test_published_subtransformers_match_hats_release(hat_reference: Path) -> None:
    from hat.space import SUB_YAML_KEYS, SubConfig

    published = yaml.safe_load((hat_reference / "published_subtransformers.yaml").read_text())
    by_key = {v: k for k, v in SUB_YAML_KEYS.items()}  # HAT's YAML key -> SubConfig field

    def field(key: str) -> str:  # the reference drops '-all' and '-subtransformer'
        return by_key.get(f"{key}-subtransformer") or by_key[f"{key}-all-subtransformer"]

    assert {p["name"] for p in published} == set(HAT_MODELS) - set(SUPERS)
    for p in published:
        want = SubConfig.from_dict({field(k): v for k, v in p["arch"].items()})
        assert dl.released_architecture(p["name"]).sub == want, p["name"]


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def databin(tmp_path_factory) -> Path:
    """A tiny en-de fairseq data-bin (as HAT's wmt14.en-de archive holds)."""
    raw = tmp_path_factory.mktemp("raw")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(20)]
    for split, n in (("train", 20), ("valid", 4), ("test", 4)):
        lines = [" ".join(rng.choice(words) for _ in range(5)) for _ in range(n)]
        (raw / f"{split}.en").write_text("\n".join(lines) + "\n")
        (raw / f"{split}.de").write_text("\n".join(reversed(lines)) + "\n")
    return fairseq_preprocess(raw, tmp_path_factory.mktemp("bin"), "en", "de",
                              joined_dictionary=True)


def make_tgz(path: Path, databin: Path, top: str | None = "wmt16_en_de",
             skip: str = "", extra: list[tarfile.TarInfo] = ()) -> Path:
    """A tgz of ``databin`` (under one top folder, or flat), without files containing ``skip``,
    plus ``extra`` members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for f in sorted(databin.iterdir()):
            if f.suffix in (".bin", ".idx", ".txt") and not (skip and skip in f.name):
                tf.add(f, arcname=f"{top}/{f.name}" if top else f.name)
        for info in extra:
            tf.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 4 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.slow
def test_get_preprocessed_sh_from_a_mirror(databin: Path, tmp_path: Path) -> None:
    archive = make_tgz(tmp_path / "mirror" / "wmt16_en_de.preprocessed.tgz", databin)
    script = ROOT / "configs" / "wmt14.en-de" / "get_preprocessed.sh"
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(script), "--mirror", str(archive.parent)], cwd=work,
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    out = work / "data" / "wmt14.en-de" / "data-bin"
    assert databin_missing(out, "en", "de") == []
    name = "train.en-de.de.bin"
    assert (out / name).read_bytes() == (databin / name).read_bytes()
    assert (out / MARKER).is_file() and leftovers(out.parent) == ["data-bin"]
    res = subprocess.run(["bash", str(script), "--mirror", str(archive.parent)], cwd=work,
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "| present" in res.stdout, res.stderr[-2000:]


def test_flat_archive_over_http_and_checks(server, databin: Path, tmp_path: Path) -> None:
    body = make_tgz(tmp_path / "flat.tgz", databin, top=None).read_bytes()
    server.routes["/iwslt.tgz"] = (200, "application/gzip", body, None)
    server.routes["/page.tgz"] = (200, "application/gzip", b"<html>sign in</html>", None)
    out = tmp_path / "data" / "wmt14.en-de" / "data-bin"
    fetch_data("wmt14.en-de", out, url=f"{server.url}/iwslt.tgz?dl=0", log=lambda m: None)
    assert databin_missing(out, "en", "de") == []
    assert (out.parent / "wmt16_en_de.preprocessed.tgz").read_bytes() == body  # kept, as HAT
    out2 = tmp_path / "other" / "data-bin"
    fetch_data("wmt14.en-de", out2, url=f"{server.url}/iwslt.tgz", keep_archive=False,
               log=lambda m: None)
    assert leftovers(out2.parent) == ["data-bin"]
    with pytest.raises(DownloadError, match="not a gzip-compressed tar archive .a web page"):
        fetch_data("wmt14.en-de", tmp_path / "x" / "data-bin", url=f"{server.url}/page.tgz",
                   log=lambda m: None)
    assert leftovers(tmp_path / "x") == []
    digest = hashlib.sha256(body).hexdigest()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "wmt16_en_de.preprocessed.tgz").write_bytes(body)
    (tmp_path / "m" / "wmt16_en_de.preprocessed.tgz.sha256").write_text("f" * 64)
    with pytest.raises(DownloadError, match="does not match the expected f+"):
        fetch_data("wmt14.en-de", tmp_path / "y" / "data-bin", mirror=tmp_path / "m",
                   log=lambda m: None)
    fetch_data("wmt14.en-de", tmp_path / "y" / "data-bin", mirror=tmp_path / "m",
               sha256=digest, log=lambda m: None)


@pytest.mark.parametrize("bad,message", [
    (member("wmt16_en_de/evil", tarfile.SYMTYPE, "/etc/passwd"), "refusing the link"),
    (member("wmt16_en_de/hard", tarfile.LNKTYPE, "wmt16_en_de/dict.en.txt"), "refusing the link"),
    (member("../evil.txt"), "leads outside"),
    (member("/tmp/hat-evil.txt"), "leads outside"),
    (member("wmt16_en_de/fifo", tarfile.FIFOTYPE), "not a plain file or folder"),
])
def test_unsafe_archives_are_refused(databin: Path, tmp_path: Path, bad, message) -> None:
    archive = make_tgz(tmp_path / "m" / "wmt16_en_de.preprocessed.tgz", databin, extra=[bad])
    out = tmp_path / "work" / "data-bin"
    with pytest.raises(DownloadError, match=message):
        fetch_data("wmt14.en-de", out, mirror=archive.parent, log=lambda m: None)
    assert leftovers(out.parent) == [] and not (tmp_path / "evil.txt").exists()


def test_incomplete_or_truncated_archives_say_what_is_wrong(databin: Path, tmp_path: Path,
                                                            capsys) -> None:
    archive = make_tgz(tmp_path / "m" / "wmt16_en_de.preprocessed.tgz", databin, skip="test.")
    out = tmp_path / "work" / "data-bin"
    assert data_main(["--task", "wmt14.en-de", "--out", str(out), "--mirror",
                      str(archive.parent)]) == 1
    err = capsys.readouterr().err
    assert "not a fairseq data-bin of en-de" in err
    assert "lacks test.en-de.en.bin, test.en-de.en.idx, test.en-de.de.bin" in err
    assert leftovers(out.parent) == []
    whole = make_tgz(archive, databin).read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DownloadError, match="cannot extract it .* truncated or corrupt"):
        fetch_data("wmt14.en-de", out, mirror=archive.parent, log=lambda m: None)
    assert leftovers(out.parent) == []


def test_existing_data_bin_is_kept_unless_forced(databin: Path, tmp_path: Path, capsys) -> None:
    archive = make_tgz(tmp_path / "m" / "wmt16_en_de.preprocessed.tgz", databin)
    out = tmp_path / "work" / "data-bin"
    out.mkdir(parents=True)
    (out / "dict.en.txt").write_text("ours 1\n")  # e.g. made by preprocess.sh
    argv = ["--task", "wmt14.en-de", "--out", str(out), "--mirror", str(archive.parent)]
    assert data_main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists but was not extracted from HAT's archive" in err and "--force" in err
    assert (out / "dict.en.txt").read_text() == "ours 1\n"
    assert data_main([*argv, "--force"]) == 0
    assert (out / "dict.en.txt").read_bytes() == (databin / "dict.en.txt").read_bytes()
    assert leftovers(out.parent) == ["data-bin"]
    with pytest.raises(HatConfigError, match="--task wmt16.en-de: HAT published"):
        fetch_data("wmt16.en-de")


def test_every_truncation_of_an_archive_is_detected(tmp_path: Path) -> None:
    """A cut between two tar members looks like a complete tar: the gzip stream must tell."""
    import io
    import os
    import tarfile

    from hat.download import safe_extract

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(40):
            data = os.urandom(20)  # tiny members: most cuts fall into a tar header
            info = tarfile.TarInfo(f"x/f{i}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    whole = buf.getvalue()
    for cut in range(100, len(whole), 37):
        (tmp_path / "a.tgz").write_bytes(whole[:cut])
        with pytest.raises(DownloadError, match="truncated or corrupt"):
            safe_extract(tmp_path / "a.tgz", tmp_path / f"out{cut}")


def test_download_model_help_and_list_do_not_import_torch() -> None:
    """``download_model.py --help`` / ``--list`` answer without loading torch or fairseq (the
    script imports ``hat`` lazily); a download registers HAT with fairseq first."""
    code = ("import runpy, sys; sys.argv = ['download_model.py', '--list'];\n"
            "try:\n runpy.run_path('download_model.py', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print('LOADED', 'torch' in sys.modules, 'fairseq' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "HAT_wmt14ende_raspberrypi@3.5s_bleu@25.8" in res.stdout
    assert "LOADED False False" in res.stdout
    res = subprocess.run([sys.executable, "download_model.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0 and "--model-name" in res.stdout
