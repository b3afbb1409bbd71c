"""Whole-tool memory and process limits through a cgroup made for each sandboxed run.

Per-process rlimits do not bound a tool: ``RLIMIT_DATA`` ignores shared mappings and
SysV segments, and three children may each stay under it. A cgroup counts every page the
run's processes charge (anonymous, shared, tmpfs/shm, SysV) and every process, together.

Where the machine allows it, :func:`support` finds a cgroup this process may create
children in — **below its own cgroup**, so the run never escapes a limit the caller is
under — by writing to cgroupfs directly (root, or a delegated subtree):

* cgroup v2 (``/sys/fs/cgroup`` or ``/sys/fs/cgroup/unified``) with the ``memory`` and
  ``pids`` controllers enabled for children of our cgroup: ``memory.max``,
  ``memory.swap.max = 0``, ``pids.max``;
* cgroup v1 (hybrid hierarchies, e.g. this project's Debian VMs): the ``memory`` and
  ``pids`` hierarchies, ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``
  when swap accounting exists), ``pids.max``.

The kernel's OOM killer then kills a process of the run when the whole run exceeds the
memory limit; ``fork`` fails with EAGAIN past ``pids.max``. What the probe found (and
why not, when it found nothing) is printed by ``python -m opensage.sandbox``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["Support", "RunCgroup", "support", "PREFIX"]

#: Name prefix of the cgroups opensage creates: ``opensage-<pid>-<random>``.
PREFIX = "opensage-"
_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Support:
    """Where per-run cgroups can be made.

    :param version: ``"v2"``, ``"v1"`` or None (no cgroup limits on this machine).
    :param memory: parent folder for the memory cgroup (None: memory not limited).
    :param pids: parent folder for the pids cgroup (None: process count not limited).
    :param reason: why a controller is missing (empty when both work).
    """

    version: str | None
    memory: Path | None
    pids: Path | None
    reason: str = ""

    @property
    def enforced(self) -> bool:
        """True when both the memory and the pids controller are usable (limits are enforced)."""
        return self.memory is not None and self.pids is not None


def _own_paths() -> dict[str, str]:
    """``{controller or "" (v2): path}`` from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctl in parts[1].split(",") if parts[1] else [""]:
            out[ctl] = parts[2]
    return out


def _try_child(parent: Path, files: dict[str, str]) -> str | None:
    """Make and remove a test child of ``parent`` writing ``files``; None if it works, else why not."""
    child = parent / f"{PREFIX}probe-{os.getpid()}-{random.randrange(1 << 30)}"
    try:
        child.mkdir()
    except OSError as exc:
        return f"cannot create a cgroup under {parent}: {exc.strerror}"
    try:
        for name, value in files.items():
            try:
                (child / name).write_text(value)
            except OSError as exc:
                return f"cannot write {child / name}: {exc.strerror}"
        return None
    finally:
        try:
            child.rmdir()
        except OSError:
            pass


def _v2_root() -> Path | None:
    for cand in (_ROOT, _ROOT / "unified"):
        if (cand / "cgroup.controllers").is_file():
            return cand
    return None


@lru_cache(maxsize=1)
def support() -> Support:
    """Probe once per process (about 1 ms) which limits a per-run cgroup can enforce here."""
    own = _own_paths()
    reasons: list[str] = []
    root2 = _v2_root()
    if root2 is not None and "" in own:
        parent = root2 / own[""].lstrip("/")
        try:
            available = set((parent / "cgroup.controllers").read_text().split())
        except OSError:
            available = set()
        missing = {"memory", "pids"} - available
        if missing:
            reasons.append(f"cgroup v2 at {root2}: controller(s) {', '.join(sorted(missing))} not available "
                           f"to {parent} (bound to cgroup v1, or not delegated)")
        else:
            try:
                enabled = set((parent / "cgroup.subtree_control").read_text().split())
                if not {"memory", "pids"} <= enabled:
                    (parent / "cgroup.subtree_control").write_text("+memory +pids")
                why = _try_child(parent, {"memory.max": str(64 << 20), "pids.max": "8"})
            except OSError as exc:
                why = (f"cannot enable memory/pids for children of {parent}: {exc.strerror} (a cgroup holding "
                       "processes cannot; run opensage in a delegated cgroup, e.g. systemd-run --user --scope "
                       "-p Delegate=yes)")
            if why is None:
                return Support("v2", parent, parent)
            reasons.append(why)
    mem = pids = None
    if "memory" in own and (_ROOT / "memory").is_dir():
        parent = _ROOT / "memory" / own["memory"].lstrip("/")
        why = _try_child(parent, {"memory.limit_in_bytes": str(64 << 20)})
        if why is None:
            mem = parent
        else:
            reasons.append(f"cgroup v1 memory: {why}")
    elif not reasons:
        reasons.append("no cgroup memory controller mounted")
    if "pids" in own and (_ROOT / "pids").is_dir():
        parent = _ROOT / "pids" / own["pids"].lstrip("/")
        why = _try_child(parent, {"pids.max": "8"})
        if why is None:
            pids = parent
        else:
            reasons.append(f"cgroup v1 pids: {why}")
    elif not reasons:
        reasons.append("no cgroup pids controller mounted")
    if mem is None and pids is None:
        return Support(None, None, None, "; ".join(reasons) or "no usable cgroup")
    return Support("v1", mem, pids, "; ".join(reasons))


class RunCgroup:
    """The cgroup(s) of one run: made by :meth:`create`, joined in the child, removed after.

    :param memory_mb: memory limit of the whole run, MiB (anonymous + shared + tmpfs pages).
    :param processes: most processes and threads of the whole run.
    """

    def __init__(self, sup: Support, memory_mb: int, processes: int) -> None:
        self.support = sup
        self.dirs: list[Path] = []
        self.memory_mb = memory_mb
        self.processes = processes
        self._procs_fds: list[int] = []

    def create(self) -> "RunCgroup":
        """Make the cgroup folders and set the limits. :raises OSError: cgroupfs refused."""
        name = f"{PREFIX}{os.getpid()}-{random.randrange(1 << 40):010x}"
        sup = self.support
        limit = str(self.memory_mb * 1024 * 1024)
        try:
            if sup.version == "v2":
                d = sup.memory / name
                d.mkdir()
                self.dirs.append(d)
                (d / "memory.max").write_text(limit)
                for optional, value in (("memory.swap.max", "0"), ("memory.oom.group", "0")):
                    try:
                        (d / optional).write_text(value)
                    except OSError:
                        pass
                (d / "pids.max").write_text(str(self.processes))
            else:
                if sup.memory is not None:
                    d = sup.memory / name
                    d.mkdir()
                    self.dirs.append(d)
                    (d / "memory.limit_in_bytes").write_text(limit)
                    try:  # memory + swap: no spilling into swap to get around the limit
                        (d / "memory.memsw.limit_in_bytes").write_text(limit)
                    except OSError:
                        pass
                if sup.pids is not None:
                    d = sup.pids / name
                    d.mkdir()
                    self.dirs.append(d)
                    (d / "pids.max").write_text(str(self.processes))
            self._procs_fds = [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in self.dirs]
        except OSError:
            self.remove()
            raise
        return self

    def join(self) -> None:
        """Move the calling process into the run's cgroups (called in the child before exec)."""
        pid = str(os.getpid()).encode()
        for fd in self._procs_fds:
            os.write(fd, pid)

    def oom_killed(self) -> bool:
        """True when the kernel killed a process of the run for exceeding the memory limit."""
        for d in self.dirs:
            for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                try:
                    for line in (d / name).read_text().splitlines():
                        k, _, v = line.partition(" ")
                        if k == key and int(v) > 0:
                            return True
                except (OSError, ValueError):
                    continue
        return False

    def kill(self) -> None:
        """SIGKILL every process still in the run's cgroups."""
        for d in self.dirs:
            kill_file = d / "cgroup.kill"
            if self.support.version == "v2" and kill_file.exists():
                try:
                    kill_file.write_text("1")
                    continue
                except OSError:
                    pass
            try:
                pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
            except OSError:
                continue
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass

    def remove(self, wait_s: float = 2.0, background: bool = True) -> None:
        """Kill what is left and remove the folders.

        A cgroup whose last process is still exiting refuses ``rmdir`` (EBUSY) for a few
        milliseconds; with ``background`` the retries (every 10 ms, up to ``wait_s``
        seconds) happen in a daemon thread so the run returns at once. What a killed
        process leaves is removed by :func:`sweep_stale`.
        """
        for fd in self._procs_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._procs_fds = []
        left = []
        for d in reversed(self.dirs):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(d)
        self.dirs = left[::-1]
        if not left:
            return
        self.kill()
        if background:
            threading.Thread(target=self._retry, args=(wait_s,), daemon=True, name="opensage-cgroup-rm").start()
        else:
            self._retry(wait_s)

    def _retry(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        for d in reversed(list(self.dirs)):
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    self.kill()
                    time.sleep(0.01)


def sweep_stale() -> int:
    """Remove cgroups of opensage processes that no longer exist; returns how many."""
    sup = support()
    removed = 0
    for parent in {p for p in (sup.memory, sup.pids) if p is not None}:
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for d in entries:
            parts = d.name[len(PREFIX):].split("-")
            if not d.name.startswith(PREFIX) or not parts[0].isdigit() or not d.is_dir():
                continue
            if _alive(int(parts[0])):
                continue
            rc = RunCgroup(sup, 0, 0)
            rc.dirs = [d]
            rc.remove(wait_s=0.5, background=False)
            removed += not d.exists()
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
