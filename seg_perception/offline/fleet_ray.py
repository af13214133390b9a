"""Ray engine of ``process-many``: a pool of actors, each holding one engine, fed one bag at a
time by the driver, which alone writes the manifest.

Local by default: Ray starts inside the process on this machine, listening on loopback only,
and stops with it. With an address (``auto``, ``host:port`` or ``ray://host:port``) the same
actors run on an existing cluster; bags and the output folder must then be visible at the
same paths on every node (the workers check the output folder and say so).

Each actor reserves ``threads`` CPUs (and a GPU share where asked) and runs torch and OpenCV
on that many threads, so workers on one machine do not fight over cores. Workers report
frame progress through an actor method the driver polls; Ctrl-C or SIGTERM asks every busy
worker to stop after its current frame, waits for the bags to be closed and discarded, and
leaves the manifest saying which bags are done and which are not.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seg_perception.offline.fleet import (
    FAILED,
    RANDOM_INIT_SEED,
    ArchiveRun,
    BagInput,
    FleetError,
    Identity,
    TaskResult,
    TaskSpec,
    check_out_dir,
    run_task,
    weights_sha256,
)
from seg_perception.runtime.signals import interrupt_on_sigterm

log = logging.getLogger(__name__)

#: The loggers of one bag's processing: a worker's per-bag warnings travel back in the
#: results, so the worker does not print them too.
BAG_LOGGERS = tuple(f"seg_perception.offline.{name}"
                    for name in ("reader", "job", "process", "stage"))

#: The pinned Ray (setup.py extra ``fleet``, requirements.txt); a cluster must run this Ray.
RAY_REQUIREMENT = "ray[client]==2.60.0"
INSTALL_HINT = ("process-many runs on Ray, which is not installed here. Install it with\n"
                "    pip install 'seg_perception[fleet]'\n"
                f"(or: pip install '{RAY_REQUIREMENT}'; in this repository `make venv` does)")
LOCAL_OBJECT_STORE = 256 * 2**20  # results are small dataclasses; bags never travel


class RayMissingError(RuntimeError):
    """Ray cannot be imported; the message says how to install it."""


def import_ray(local: bool) -> Any:
    """Import Ray, or raise :class:`RayMissingError` with the install command."""
    if local and "ray" not in sys.modules:
        # ray.init turns 127.0.0.1 into the machine's network address unless Ray's cluster
        # mode is off; this switch (read when ray is imported) keeps a local run on loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise RayMissingError(INSTALL_HINT) from exc
    return ray


@dataclass(frozen=True)
class EngineSpec:
    """The engine each worker builds (``process``'s --model/--checkpoint/--device/...)."""

    model: str
    checkpoint: str | None
    device: str
    precision: str


CustomData = Callable[[Any, Path], dict[str, str]]  # (EngineInfo, input) -> metadata


class BagWorker:
    """One worker: an engine and the bag it is processing (a Ray actor, threaded so that
    ``progress`` and ``stop`` answer while ``run`` works)."""

    def __init__(self, engine: EngineSpec, spec: TaskSpec, threads: int,
                 custom_data: CustomData, log_level: int = logging.WARNING) -> None:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
        for name in BAG_LOGGERS:  # their warnings travel back in the results
            logging.getLogger(name).setLevel(max(log_level, logging.ERROR))
        self.spec = spec
        self.custom_data = custom_data
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._progress: tuple[str | None, int, int] = (None, 0, 0)
        self.engine: Any = None
        self.info: Any = None
        try:
            import cv2
            import torch

            from seg_perception.runtime.engine import build_engine

            cv2.setNumThreads(threads)
            # Untrained networks get the same random weights in every worker; a trained
            # checkpoint overwrites every tensor, so this changes nothing for it.
            torch.manual_seed(RANDOM_INIT_SEED)
            self.engine, self.info = build_engine(engine.model, engine.checkpoint,
                                                  engine.device, engine.precision,
                                                  threads=threads)
            self.engine.warmup()
            self._identity = Identity(
                self.info.model, weights_sha256(engine.model, engine.checkpoint),
                self.info.weights, self.info.trained, self.info.device, self.info.precision,
                socket.gethostname(), os.getpid(), threads)
        except Exception as exc:  # reported by the driver as "cannot load model"
            self._identity = Identity(engine.model, "", "", False, engine.device,
                                      engine.precision, socket.gethostname(), os.getpid(),
                                      threads, error=f"{type(exc).__name__}: {exc}")

    def identity(self) -> Identity:
        return self._identity

    def check_out_dir(self, token: str) -> str | None:
        return check_out_dir(self.spec.out_dir, token)

    def run(self, bag: BagInput) -> TaskResult:
        def hook(handled: int, total: int) -> None:
            with self._lock:
                self._progress = (bag.name, handled, total)

        hook(0, 0)
        custom = self.custom_data(self.info, bag.path)
        return run_task(bag, self.spec, self.engine, custom, self._stop, hook)

    def progress(self) -> tuple[str | None, int, int]:
        with self._lock:
            return self._progress

    def stop(self) -> None:
        """Stop the current bag after its current frame (for good: the run is ending)."""
        self._stop.set()


@dataclass
class _Actor:
    handle: Any
    identity: Identity


class RayPool:
    """Ray (started here or joined) and the workers; a context manager.

    ``workers``/``threads_per_worker`` left None are chosen from the cluster's CPUs:
    ``threads_per_worker = cpus // workers`` (default workers: ``cpus // 2``, at least one;
    with GPUs: one worker per ``gpus_per_worker`` GPUs). Never more workers than bags.

    Why not ``ray.util.ActorPool`` and ``max_restarts``: the pool's ``submit``/``get_next``
    hide which actor holds which in-flight task, and this loop needs exactly that mapping
    three times: the progress poll asks each busy actor for its frame count, Ctrl-C asks
    each busy actor (not an idle one) to stop after its frame, and a worker that dies must
    fail the one bag it held, named in the manifest with its host and pid. An actor
    restarted by Ray (``max_restarts``) comes back silently under the same handle, so a
    replacement could not be checked for running the same weights (``weights_sha256``)
    before it gets bags; :meth:`_replace` (about 20 lines) does that check.
    """

    def __init__(self, engine: EngineSpec, spec: TaskSpec, custom_data: CustomData, *,
                 n_bags: int, address: str | None = None, workers: int | None = None,
                 threads_per_worker: int | None = None, gpus_per_worker: float | None = None,
                 start_timeout: float = 600.0, log_level: int = logging.WARNING) -> None:
        self.engine = engine
        self.spec = spec
        self.custom_data = custom_data
        self.n_bags = n_bags
        self.address = address
        self.want_workers = workers
        self.want_threads = threads_per_worker
        self.want_gpus = gpus_per_worker
        self.start_timeout = start_timeout
        self.log_level = log_level
        self.ray: Any = None
        self.actors: list[_Actor] = []
        self.threads = 1
        self.gpus = 0.0
        self._owns_ray = False
        self._restore_sigterm: Callable[[], None] | None = None
        self._replacements = 0

    # -- start and stop --
    def __enter__(self) -> RayPool:
        try:
            self._start()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _start(self) -> None:
        from seg_perception.runtime.engine import cpu_count

        ray = self.ray = import_ray(local=self.address is None)
        if ray.is_initialized():
            log.info("using the Ray instance already running in this process")
        elif self.address is None:
            # Ray starts its workers at nice 15; here they are the job itself, and at 15 any
            # other work starves them: a 4000-frame bag beside two CPU-bound processes ran
            # at 9.7 frames/s in a worker at nice 15 (the worker got 4% of a core).
            ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False,
                     _node_ip_address="127.0.0.1", object_store_memory=LOCAL_OBJECT_STORE,
                     logging_level=logging.WARNING, log_to_driver=True,
                     _system_config={"worker_niceness": 0})
            self._owns_ray = True
        else:
            try:
                ray.init(address=self.address, logging_level=logging.WARNING,
                         log_to_driver=True)
            except Exception as exc:
                raise FleetError(f"cannot connect to the Ray cluster at {self.address}: "
                                 f"{exc}") from exc
            self._owns_ray = True  # ray.shutdown() disconnects; the cluster keeps running
        # ray.init sets SIGTERM to exit at once; we stop cleanly instead.
        self._restore_sigterm = interrupt_on_sigterm()
        self._size()
        cls = ray.remote(BagWorker)
        self._options = {"num_cpus": self.threads, "num_gpus": self.gpus,
                         "max_concurrency": 4, "max_restarts": 0, "max_task_retries": 0}
        if self.address is not None:
            self._options["scheduling_strategy"] = "SPREAD"
        self._cls = cls
        handles = [self._spawn() for _ in range(self.workers)]
        self.actors = self._ready(handles)
        first = self._identity = self.actors[0].identity
        for actor in self.actors:
            ident = actor.identity
            if (ident.model, ident.weights_sha256) != (first.model, first.weights_sha256):
                raise FleetError(
                    f"workers run different weights: {first.host} has {first.model} "
                    f"{first.weights_sha256[:12]}, {ident.host} has {ident.model} "
                    f"{ident.weights_sha256[:12]} (a --checkpoint path must hold the same "
                    "file on every node)")

    def _size(self) -> None:
        ray = self.ray
        res = ray.cluster_resources()
        cpus = int(res.get("CPU", 0))
        gpus = float(res.get("GPU", 0))
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        node_cpus = max((int(n.get("Resources", {}).get("CPU", 0)) for n in nodes), default=0)
        if cpus < 1 or node_cpus < 1:
            raise FleetError(f"the Ray cluster offers no CPUs (resources: {res})")
        gpu_share = self.want_gpus
        if gpu_share is None:
            gpu_share = 1.0 if gpus >= 1 and self.engine.device != "cpu" else 0.0
        if gpu_share > 0 and gpus <= 0:
            raise FleetError("--gpus-per-worker given but the Ray cluster has no GPUs")
        workers = self.want_workers
        if workers is None:
            if gpu_share > 0:
                workers = max(1, int(gpus // gpu_share))
            elif self.want_threads:
                workers = max(1, cpus // self.want_threads)
            else:
                workers = max(1, cpus // 2)
        threads = self.want_threads or max(1, cpus // workers)
        if gpu_share > 0 and not self.want_threads:
            threads = min(threads, 4)  # the network runs on the GPU: CPUs decode and write
        threads = min(threads, node_cpus)
        fit = max(1, cpus // threads)
        if gpu_share > 0:
            fit = min(fit, max(1, int(gpus // gpu_share)))
        if workers > fit:
            log.warning("%d workers of %d CPU thread(s)%s do not fit the %d CPUs%s of the Ray "
                        "cluster: using %d", workers, threads,
                        f" and {gpu_share:g} GPU" if gpu_share else "", cpus,
                        f" and {gpus:g} GPUs" if gpu_share else "", fit)
            workers = fit
        self.workers = max(1, min(workers, self.n_bags))
        self.threads = threads
        self.gpus = gpu_share
        log.info("Ray %s: %d CPUs%s on %d node(s); %d worker(s) x %d CPU thread(s)%s",
                 "local" if self.address is None else f"at {self.address}", cpus,
                 f", {gpus:g} GPUs" if gpus else "", len(nodes), self.workers, threads,
                 f", {gpu_share:g} GPU each" if gpu_share else "")

    def _spawn(self) -> Any:
        return self._cls.options(**self._options).remote(
            self.engine, self.spec, self.threads, self.custom_data, self.log_level)

    def _ready(self, handles: Sequence[Any]) -> list[_Actor]:
        """Wait for the workers' engines; drop the ones that cannot start in time."""
        ray = self.ray
        refs = {h.identity.remote(): h for h in handles}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=self.start_timeout)
        for ref in pending:
            log.warning("a worker did not start within %.0f s (the cluster lacks the CPUs or "
                        "GPUs it asks for?); going on without it", self.start_timeout)
            ray.kill(refs[ref])
        actors = []
        for ref in ready:
            try:
                ident = ray.get(ref)
            except ray.exceptions.RayError as exc:
                log.warning("a worker failed to start: %s", _short(exc))
                continue
            if ident.error:
                raise FleetError(f"cannot load model {self.engine.model}: {ident.error}")
            actors.append(_Actor(refs[ref], ident))
        if not actors:
            raise FleetError("no worker started")
        token = (self.spec.out_dir / ".fleet" / "run").read_text().strip()
        for actor in actors:
            problem = ray.get(actor.handle.check_out_dir.remote(token))
            if problem:
                raise FleetError(problem)
        return actors

    def _close(self) -> None:
        ray = self.ray
        if ray is None:
            return
        for actor in self.actors:
            try:
                ray.kill(actor.handle)
            except Exception as exc:  # already gone
                log.debug("kill worker: %s", exc)
        self.actors = []
        if self._restore_sigterm is not None:
            self._restore_sigterm()
            self._restore_sigterm = None
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    @property
    def identity(self) -> Identity:
        """Model and weights of every worker (device and host: the first worker's)."""
        return self._identity

    # -- the run --
    def run(self, todo: Sequence[BagInput], archive: ArchiveRun, poll: float = 1.0,
            stop_timeout: float = 120.0) -> None:
        """Process ``todo`` on the workers, recording every event in ``archive``.

        Returns normally after Ctrl-C/SIGTERM too (``archive.interrupted`` is then True):
        busy workers finish their current frame and discard their bag; bags not started
        stay pending.
        """
        ray = self.ray
        queue = deque(todo)
        idle = deque(self.actors)
        inflight: dict[Any, tuple[_Actor, BagInput]] = {}
        last_poll = 0.0
        try:
            while queue or inflight:
                while queue and idle:
                    actor, bag = idle.popleft(), queue.popleft()
                    archive.started(bag, actor.identity)
                    inflight[actor.handle.run.remote(bag)] = (actor, bag)
                if not inflight:
                    break  # every worker died
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=poll)
                for ref in ready:
                    actor, bag = inflight.pop(ref)
                    if self._collect(ref, actor, bag, archive):
                        idle.append(actor)
                    elif (new := self._replace(actor)) is not None:
                        idle.append(new)
                if time.monotonic() - last_poll >= poll:
                    last_poll = time.monotonic()
                    self._poll(inflight, archive)
            for bag in queue:  # no worker left
                archive.abandoned(bag, "no worker left to process it")
        except KeyboardInterrupt:
            archive.interrupted = True
            self._stop_all(inflight, archive, stop_timeout)
        archive.settle()

    def _collect(self, ref: Any, actor: _Actor, bag: BagInput, archive: ArchiveRun) -> bool:
        """Record a finished task; False when its worker died."""
        ray = self.ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            ident = actor.identity
            archive.finished(bag, TaskResult(
                bag.name, FAILED, worker=f"{ident.host}:{ident.pid}",
                error=f"the worker ({ident.host}, pid {ident.pid}) died while processing this "
                      f"bag: {_short(exc)}"))
            return False
        except ray.exceptions.RayError as exc:
            archive.finished(bag, TaskResult(bag.name, FAILED, error=_short(exc)))
            return True
        archive.finished(bag, result)
        return True

    def _replace(self, dead: _Actor) -> _Actor | None:
        """A new worker for one that died (at most one per original worker)."""
        self.actors = [a for a in self.actors if a is not dead]
        if self._replacements >= self.workers:
            log.warning("a worker died; %d left", len(self.actors))
            return None
        self._replacements += 1
        try:
            [new] = self._ready([self._spawn()])
        except FleetError as exc:
            log.warning("a worker died and its replacement failed: %s", exc)
            return None
        if new.identity.weights_sha256 != dead.identity.weights_sha256:
            log.warning("the replacement of a dead worker runs other weights; not used")
            self.ray.kill(new.handle)
            return None
        self.actors.append(new)
        return new

    def _poll(self, inflight: dict[Any, tuple[_Actor, BagInput]], archive: ArchiveRun) -> None:
        ray = self.ray
        refs = [actor.handle.progress.remote() for actor, _ in inflight.values()]
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=2.0)
        for ref in ready:
            try:
                name, handled, total = ray.get(ref)
            except ray.exceptions.RayError:
                continue
            if name is not None:
                archive.progress(name, handled, total)

    def _stop_all(self, inflight: dict[Any, tuple[_Actor, BagInput]], archive: ArchiveRun,
                  timeout: float) -> None:
        ray = self.ray
        log.warning("stopping: %d bag(s) in progress are discarded after their current frame "
                    "(Ctrl-C again to stop at once)", len(inflight))
        for actor, _ in inflight.values():
            actor.handle.stop.remote()
        deadline = time.monotonic() + timeout
        try:
            while inflight and time.monotonic() < deadline:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    actor, bag = inflight.pop(ref)
                    self._collect(ref, actor, bag, archive)
        except KeyboardInterrupt:
            pass
        for _actor, bag in inflight.values():
            archive.abandoned(bag, "stopped")
        inflight.clear()


def _short(exc: BaseException) -> str:
    """The last line of a Ray error (its tracebacks are long)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
