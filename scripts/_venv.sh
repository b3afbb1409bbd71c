# Sourced by scripts/demo.sh and scripts/test.sh: make (or reuse) the project's virtual
# environment and put it first on PATH. Debian/Ubuntu mark their system Python
# "externally managed" (PEP 668), so `pip install` outside a venv is refused there.
#   OPENSAGE_VENV  where the venv lives (default: .venv in the repository)
#   PYTHON         the interpreter that creates it (default: python3; needs >= 3.10)
venv_dir=${OPENSAGE_VENV:-$PWD/.venv}
python=${PYTHON:-python3}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: $python not found; install Python >= 3.10 (Debian/Ubuntu: apt-get install python3 python3-venv)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: opensage needs Python >= 3.10; $python is $("$python" -V 2>&1). Set PYTHON=/path/to/python3.X" >&2
    exit 1
fi

if [ ! -x "$venv_dir/bin/python" ]; then
    echo "creating the virtual environment $venv_dir" >&2
    if ! "$python" -m venv "$venv_dir" 2>"${TMPDIR:-/tmp}/opensage-venv.err"; then
        rm -rf "$venv_dir"
        # Debian/Ubuntu ship the venv module (ensurepip) in a separate package
        pkg=python3-venv
        ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "installing $pkg and python$ver-venv with apt-get (running as root)" >&2
            apt-get update -qq && apt-get install -y -qq "$pkg" "python$ver-venv" >&2 || true
            "$python" -m venv "$venv_dir" || { rm -rf "$venv_dir"; exit 1; }
        else
            cat "${TMPDIR:-/tmp}/opensage-venv.err" >&2
            echo "error: could not create a virtual environment with $python." >&2
            echo "On Debian/Ubuntu install the venv module first: sudo apt-get install $pkg python$ver-venv" >&2
            exit 1
        fi
    fi
fi
export VIRTUAL_ENV=$venv_dir
export PATH="$venv_dir/bin:$PATH"
