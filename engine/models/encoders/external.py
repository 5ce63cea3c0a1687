"""The user's own encoders: ``encoder = "package.module:function"`` and entry points of ``mmbal.encoders``.

A preset names any importable function that returns an ``nn.Module``::

    [modalities.audio]
    encoder = "my_pkg.nets:small_cnn"   # imported from the Python path, else from the preset's folder
    width = 64                          # every other key is passed to the function as a keyword argument
    out_dim = 128                       # optional: the feature size the module returns

The function is called as ``function(**options)``, plus ``input_shape=(...)`` (the modality's
per-sample shape) when it has a parameter of that name, and ``out_dim=`` when it has one of that
name and the preset gives it. Its module maps (B, *input_shape) float tensors to (B, out_dim)
features. ``out_dim`` is the module's ``out_dim`` attribute, else the preset's, else measured by
one forward pass of two zero samples (eval mode, no gradient, the RNG untouched); a module whose
output is not (B, out_dim) is refused before training. Such an encoder has no stages, so a
mid-fusion module cannot sit inside it; ``freeze`` names its parameters by prefix.

Options are checked against the function's signature when the preset is read (an unknown or
missing keyword is a problem naming its key), and the call itself when the model is built: an
exception raised by it becomes a preset problem naming the function, where it was raised and why.
An import failure names the module.

An installed package can give such a function a short name with an entry point::

    [project.entry-points."mmbal.encoders"]
    small_cnn = "my_pkg.nets:small_cnn"

It is loaded when a preset names ``encoder = "small_cnn"`` (:mod:`engine.plugins`); a module that
registers itself with ``@ENCODERS.register(...)`` instead is used as registered.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ...registry import did_you_mean
from . import ENCODERS, EncoderProblem

TARGET = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
SUPPLIED = ("input_shape",)   # passed by mmbal, never by the preset
OUT_DIM = "out_dim"


def is_target(name: Any) -> bool:
    """Whether ``name`` reads as ``package.module:function``."""
    return isinstance(name, str) and TARGET.fullmatch(name) is not None


def register_target(name: str, folder: Path | None = None) -> str | None:
    """Import ``package.module:function`` and register it as an encoder of that name (once).

    The module is looked up on the Python path, then in ``folder`` (the preset's folder, added to the
    end of ``sys.path`` when the module is found only there, so a run, its resume and ``mmbal
    predict`` find ``my_nets.py`` beside the preset from any working directory).
    Returns why it cannot be used (the module does not import, it has no such attribute, or the
    attribute is not callable), or None when it is registered."""
    if name in ENCODERS._entries:
        return None
    module_name, _, attribute = name.partition(":")
    _add_preset_folder(module_name, folder)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ModuleNotFoundError, or whatever the module raises while it is imported
        where = f", the preset's folder {folder}" if folder is not None else ""
        return (f"cannot import module '{module_name}' for encoder '{name}': {type(exc).__name__}: {exc} "
                f"(is its package installed, or its folder on PYTHONPATH{where}?)")
    for part in attribute.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            return f"module '{module_name}' has no '{attribute}'{did_you_mean(part, names)} (encoder '{name}')"
        obj = getattr(obj, part)
    if not callable(obj):
        return f"'{name}' is a {type(obj).__name__}, not a function that returns an nn.Module"
    adopt_function(name, obj)
    return None


def _add_preset_folder(module_name: str, folder: Path | None) -> None:
    """Append ``folder`` to ``sys.path`` when the top-level package of ``module_name`` is not on the path but
    is in ``folder`` (``name.py`` or ``name/``)."""
    if folder is None:
        return
    top = module_name.split(".")[0]
    if top in sys.modules or importlib.util.find_spec(top) is not None:
        return
    folder = Path(folder).resolve()
    if ((folder / f"{top}.py").is_file() or (folder / top).is_dir()) and str(folder) not in sys.path:
        sys.path.append(str(folder))
        importlib.invalidate_caches()


def adopt_function(name: str, function: Callable) -> None:
    """Register ``function`` (the external-encoder contract above) as the encoder ``name``."""
    doc = (inspect.getdoc(function) or "").strip().splitlines()
    help_text = doc[0] if doc else f"external encoder {getattr(function, '__module__', '?')}." \
                                   f"{getattr(function, '__qualname__', name)}"
    builder = partial(build_external, name, function)
    builder.function = function  # type: ignore[attr-defined]  (read by option_problems)
    ENCODERS.register(name, config=None, help=help_text)(builder)


def external_function(name: str) -> Callable | None:
    """The user's function behind the encoder ``name``, or None for a built-in encoder."""
    if name not in ENCODERS:
        return None
    return getattr(ENCODERS.get(name), "function", None)


def option_problems(name: str, options: dict, path: str) -> list[str]:
    """The preset's options of the external encoder ``name`` checked against its function's signature,
    each problem naming its key (``path.key``)."""
    function = external_function(name)
    problems = []
    if OUT_DIM in options:
        value = options[OUT_DIM]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{path}.{OUT_DIM}: expected a positive integer (the feature size), got {value!r}")
    for key in SUPPLIED:
        if key in options:
            problems.append(f"{path}.{key}: set by mmbal (the modality's per-sample shape), not by the preset")
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin or C function without a signature: the call will tell
        return problems
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    keywords = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in options:
        if key in SUPPLIED or (key == OUT_DIM) or takes_any or key in keywords:
            continue
        problems.append(f"{path}.{key}: unknown key; {name} takes {', '.join(k for k in keywords if k not in SUPPLIED) or 'no options'}"
                        f"{did_you_mean(key, keywords)}")
    for n, p in params.items():
        if p.default is not p.empty or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or n in SUPPLIED:
            continue
        if p.kind is p.POSITIONAL_ONLY:
            problems.append(f"{path}: {name} has the positional-only parameter '{n}', which the preset cannot give "
                            f"(options are passed by keyword); wrap it in a function with keyword parameters")
        elif n not in options:
            problems.append(f"{path}.{n}: required key is missing ({name} has no default for it)")
    return problems


def _call_arguments(function: Callable, options: dict, input_shape: tuple[int, ...]) -> dict:
    kwargs = {k: v for k, v in options.items() if k != OUT_DIM}
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return kwargs
    if "input_shape" in params:
        kwargs["input_shape"] = tuple(input_shape)
    if OUT_DIM in options and OUT_DIM in params:
        kwargs[OUT_DIM] = options[OUT_DIM]
    return kwargs


def _where(exc: BaseException) -> str:
    """" (file.py:12)" of the innermost frame of ``exc``'s traceback, or ""."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def build_external(name: str, function: Callable, options: dict | None, input_shape: tuple[int, ...]) -> nn.Module:
    """Call the user's function and check what it returns (an ``nn.Module`` giving (B, out_dim) features)."""
    options = dict(options or {})
    kwargs = _call_arguments(function, options, input_shape)
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
    try:
        module = function(**kwargs)
    except Exception as exc:  # the user's code: its error is a preset problem, with where it happened
        raise EncoderProblem(f"'{name}' called with {shown} raised {type(exc).__name__}{_where(exc)}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise EncoderProblem(f"'{name}' returned a {type(module).__name__}, not a torch.nn.Module")
    declared = getattr(module, OUT_DIM, None)
    if declared is not None and OUT_DIM in options and int(declared) != options[OUT_DIM]:
        raise EncoderProblem(f"'{name}' returned a module whose out_dim is {declared}, but the preset says "
                             f"out_dim = {options[OUT_DIM]}")
    measured = measured_out_dim(module, input_shape, name)
    expected = declared if declared is not None else options.get(OUT_DIM, measured)
    if measured != int(expected):
        raise EncoderProblem(f"'{name}' gives features of size {measured} per sample, not out_dim = {expected}")
    module.out_dim = int(measured)
    return module


def measured_out_dim(module: nn.Module, input_shape: tuple[int, ...], name: str) -> int:
    """The feature size of ``module``: one forward pass of two zero samples of ``input_shape`` in eval mode,
    without gradients and with the RNG states restored (building the same model stays seeded the same).
    The output must be (2, out_dim)."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = module(torch.zeros((2, *input_shape), device=device))
    except Exception as exc:
        raise EncoderProblem(f"'{name}' failed on two zero samples of this modality's shape {list(input_shape)}: "
                             f"{type(exc).__name__}{_where(exc)}: {exc}") from None
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EncoderProblem(f"'{name}' must map a batch (B, *{list(input_shape)}) to features (B, out_dim); "
                             f"for B = 2 it returned {got}")
    return int(out.shape[1])


__all__ = ["adopt_function", "build_external", "external_function", "is_target", "measured_out_dim",
           "option_problems", "register_target"]
