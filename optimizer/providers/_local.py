"""The embedded provider: a GGUF model run in this process by llama-cpp-python.

One ``llama_cpp.Llama`` per model per process, loaded on the first call. Calls from every
``LocalProvider`` go through one lock (both models share the same CPU cores) and run in a worker
thread, so the event loop stays free. Before each call the model state is reset: llama-cpp-python
otherwise reuses the evaluated prefix of the previous prompt, and evaluating a prompt in different
batches changes the floating-point sums enough to change greedy output.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer._errors import UserError
from optimizer.providers._base import ChatRequest, Completion, Provider, ProviderError
from optimizer.providers._weights import MODELS, check_available, model_path

__all__ = ["DEFAULT_N_CTX", "LlamaMissingError", "LocalProvider", "derive_seed"]

log = logging.getLogger(__name__)

# Qwen2.5-Coder is trained for 32768 tokens. A MoA's main agent reads every layer agent's answer,
# so 5 agents x 1024 tokens plus prompts and a 1024-token answer already pass 8192. 16384 leaves
# room for that at a small cost: the f16 KV cache is 192 MiB (0.5B) or 448 MiB (1.5B); measured
# RSS with the 0.5B model was 694/790/982 MiB at n_ctx 8192/16384/32768. Longer prompts are
# impractical here anyway: prompt evaluation ran at about 35-70 tokens/s on 2 cores, minutes for
# 16k tokens. A longer prompt fails with a ProviderError; a long answer is cut at the window.
DEFAULT_N_CTX = 16384

_SETUP = "run `make setup` (it builds llama-cpp-python and installs the `local` extra)"
_SEED_MODULUS = 0xFFFFFFFF  # llama.cpp seeds are uint32; 0xFFFFFFFF itself means "random"


class LlamaMissingError(UserError):
    """llama-cpp-python is not installed or cannot be loaded."""


@dataclass(frozen=True)
class _Instance:
    """A loaded model and the settings it was loaded with."""

    llama: Any
    path: Path
    n_ctx: int
    n_threads: int
    load_seconds: float


_INSTANCES: dict[str, _Instance] = {}
_LOAD_LOCK = threading.Lock()
_CALL_LOCK = threading.Lock()


@atexit.register
def _close_all() -> None:
    """Frees the models before interpreter shutdown, when llama-cpp-python's ``__del__`` fails."""
    if not _CALL_LOCK.acquire(blocking=False):
        return  # a call still runs: leave the memory to the operating system
    try:
        with _LOAD_LOCK:
            for instance in _INSTANCES.values():
                close = getattr(instance.llama, "close", None)
                if close is not None:
                    close()
            _INSTANCES.clear()
    finally:
        _CALL_LOCK.release()


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _llama_installed() -> bool:
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except ValueError:  # llama_cpp is in sys.modules without a spec
        return False


def _llama_class() -> Callable[..., Any]:
    """Returns ``llama_cpp.Llama``.

    Raises:
        LlamaMissingError: llama-cpp-python is missing or its native library does not load.
    """
    # llama.cpp's OpenMP threads spin while waiting by default; when graders or other trials
    # share the 2 cores, spinning threads slow generation sharply. Passive waiting measured
    # equal or faster here, idle or loaded (BENCHMARKS.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
    except ImportError as exc:
        raise LlamaMissingError(
            f"the embedded model needs llama-cpp-python, which cannot be imported ({exc}); {_SETUP}"
        ) from None
    except OSError as exc:  # the shared library exists but does not load
        raise LlamaMissingError(
            f"llama-cpp-python's native library does not load ({exc}); {_SETUP}"
        ) from None
    llama: Callable[..., Any] = llama_cpp.Llama
    return llama


def derive_seed(request: ChatRequest) -> int:
    """Returns the llama.cpp seed for ``request``.

    ``request.seed`` when given; otherwise a fixed function of ``request.sample`` and
    ``request.replica``, so repeated samples differ from each other and each is reproducible.
    """
    if request.seed is not None:
        return request.seed % _SEED_MODULUS
    label = f"moa-optimizer/local/sample/{request.sample}"
    if request.replica:
        label += f"/replica/{request.replica}"
    digest = hashlib.sha256(label.encode()).digest()
    return int.from_bytes(digest[:4], "big") % _SEED_MODULUS


class LocalProvider(Provider):
    """Answers chat requests with an embedded model (``qwen2.5-coder-0.5b`` or ``-1.5b``).

    Args:
        model: A model name from ``optimizer.providers._weights.MODELS``.
        n_ctx: Context window in tokens for the first load of the model in this process.
        n_threads: CPU threads for the first load; defaults to the CPUs this process may use.
        models_dir: Where assembled weights live; defaults to ``models_dir()``.

    Raises:
        LlamaMissingError: llama-cpp-python is not installed.
        WeightsError: Unknown model, or its weights packages are missing.
    """

    name = "local"

    def __init__(
        self,
        model: str,
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        models_dir: Path | None = None,
    ) -> None:
        check_available(model, models_dir)
        if not _llama_installed():
            raise LlamaMissingError(
                f"the embedded model needs llama-cpp-python, which is not installed; {_SETUP}"
            )
        self.model = model
        self.endpoint = f"local/{model}@{MODELS[model].sha256[:12]}"
        self._n_ctx = n_ctx
        self._n_threads = n_threads or _default_threads()
        self._models_dir = models_dir

    async def complete(self, request: ChatRequest) -> Completion:
        """Answers one request; the first call also loads the model.

        ``latency`` covers the whole call, including waiting for the lock and a first load.

        Raises:
            ProviderError: Wrong model name, ``max_tokens`` < 1, a prompt longer than the context
                window, or a llama.cpp failure.
        """
        model = request.model.removeprefix("local/")
        if model != self.model:
            raise ProviderError(f"local: this provider serves {self.model}, not {request.model}")
        if request.max_tokens < 1:
            raise ProviderError(f"local/{self.model}: max_tokens must be at least 1")
        start = time.perf_counter()
        response = await asyncio.to_thread(self._generate, request, derive_seed(request))
        latency = time.perf_counter() - start
        usage = response.get("usage") or {}
        return Completion(
            text=response["choices"][0]["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency=latency,
            finish_reason=str(response["choices"][0].get("finish_reason") or "stop"),
        )

    async def list_models(self) -> list[str]:
        """Returns the embedded models' names."""
        return list(MODELS)

    async def load(self) -> float:
        """Loads the model now instead of on the first call.

        Returns:
            Seconds the process's load of this model took (assembly and verification included).
        """
        instance = await asyncio.to_thread(self._instance)
        return instance.load_seconds

    def _instance(self) -> _Instance:
        with _LOAD_LOCK:
            instance = _INSTANCES.get(self.model)
            if instance is None:
                instance = self._load()
                _INSTANCES[self.model] = instance
            elif (instance.n_ctx, instance.n_threads) != (self._n_ctx, self._n_threads):
                log.debug(
                    "local/%s already loaded with n_ctx=%d n_threads=%d; keeping it",
                    self.model,
                    instance.n_ctx,
                    instance.n_threads,
                )
            return instance

    def _load(self) -> _Instance:
        llama_class = _llama_class()
        start = time.perf_counter()
        path = model_path(self.model, self._models_dir)
        try:
            llama = llama_class(
                model_path=str(path),
                n_ctx=self._n_ctx,
                n_threads=self._n_threads,
                n_threads_batch=self._n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProviderError(f"local/{self.model}: cannot load {path}: {exc}") from exc
        seconds = time.perf_counter() - start
        log.info("loaded local/%s from %s in %.1f s", self.model, path, seconds)
        return _Instance(llama, path, self._n_ctx, self._n_threads, seconds)

    def _generate(self, request: ChatRequest, seed: int) -> dict[str, Any]:
        instance = self._instance()
        with _CALL_LOCK:
            llama = instance.llama
            llama.reset()  # no prefix reuse: the same request must give the same answer
            try:
                response: dict[str, Any] = llama.create_chat_completion(
                    messages=[m.to_dict() for m in request.messages],
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    seed=seed,
                )
            except ValueError as exc:
                if "context window" in str(exc):
                    raise ProviderError(
                        f"local/{self.model}: prompt too long for the context window "
                        f"of {instance.n_ctx} tokens ({exc})"
                    ) from exc
                raise ProviderError(f"local/{self.model}: {exc}") from exc
            except RuntimeError as exc:
                raise ProviderError(f"local/{self.model}: llama.cpp failed: {exc}") from exc
            return response
